//! Model families from `catalog/models.yaml`: the capability tags, context window and largest
//! answer of each, found by the deployment's model name.

use std::sync::LazyLock;

use serde::Deserialize;

/// One family of `models.yaml`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Family {
    pub name: String,
    /// Which source of the file's header the entry was read from.
    pub source: String,
    #[serde(default)]
    pub context_window: Option<u64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    pub tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    families: Vec<Family>,
}

static FAMILIES: LazyLock<Vec<Family>> = LazyLock::new(|| {
    // The file is part of the crate and its unit test parses it, so a broken file fails the build's
    // tests, never a running process: an unreadable file here means an empty catalog.
    serde_saphyr::from_str::<File>(include_str!("../../catalog/models.yaml"))
        .map(|f| f.families)
        .unwrap_or_default()
});

/// The family of `model`: the longest family name that is the model's name without its
/// provider's qualifiers, or a prefix of it followed by `-`, `:` or `@`.
pub fn family_of(model: &str) -> Option<&'static Family> {
    let name = unqualified(&model.to_ascii_lowercase()).to_owned();
    FAMILIES
        .iter()
        .filter(|f| {
            name == f.name
                || name
                    .strip_prefix(f.name.as_str())
                    .is_some_and(|rest| rest.starts_with(['-', ':', '@']))
        })
        .max_by_key(|f| f.name.len())
}

/// Bedrock's region (`us.`, `eu.`, `apac.`, `global.`, `us-gov.`) and vendor prefixes.
const BEDROCK_PREFIXES: &[&str] = &[
    "us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.",
];
const BEDROCK_VENDORS: &[&str] = &[
    "anthropic.",
    "amazon.",
    "cohere.",
    "meta.",
    "mistral.",
    "deepseek.",
    "openai.",
];

/// The model name without a path (`models/gemini-2.5-pro`, `meta-llama/Llama-3.3-70B-Instruct`)
/// and without Bedrock's region and vendor prefixes.
fn unqualified(model: &str) -> &str {
    let mut name = model.rsplit('/').next().unwrap_or(model);
    if let Some(rest) = BEDROCK_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
        name = rest;
    }
    BEDROCK_VENDORS
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: &[&str] = &[
        "vision",
        "function-calling",
        "json-mode",
        "structured-output",
        "reasoning",
        "embeddings",
        "images",
    ];
    const SOURCES: &[&str] = &[
        "openai",
        "anthropic",
        "google",
        "mistral",
        "deepseek",
        "cohere",
        "aws",
        "meta",
    ];

    #[test]
    fn the_file_parses_and_every_entry_names_a_known_tag_and_source() {
        let file: File = serde_saphyr::from_str(include_str!("../../catalog/models.yaml")).unwrap();
        assert_eq!(file.families.len(), FAMILIES.len());
        assert!(FAMILIES.len() > 50);
        for family in FAMILIES.iter() {
            assert!(SOURCES.contains(&family.source.as_str()), "{}", family.name);
            for tag in &family.tags {
                assert!(TAGS.contains(&tag.as_str()), "{}: {tag}", family.name);
            }
            let same_name = FAMILIES.iter().filter(|f| f.name == family.name).count();
            assert_eq!(same_name, 1, "{} is listed twice", family.name);
        }
    }

    #[test]
    fn provider_qualified_and_dated_names_find_their_family() {
        let family = |m: &str| family_of(m).map(|f| f.name.as_str());
        assert_eq!(family("gpt-4o-mini-2024-07-18"), Some("gpt-4o-mini"));
        assert_eq!(family("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(
            family("models/gemini-2.5-flash-lite"),
            Some("gemini-2.5-flash-lite")
        );
        assert_eq!(family("claude-sonnet-4@20250514"), Some("claude-sonnet-4"));
        assert_eq!(
            family("claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            family("us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
            Some("claude-3-7-sonnet")
        );
        assert_eq!(
            family("amazon.titan-embed-text-v2:0"),
            Some("titan-embed-text-v2")
        );
        assert_eq!(
            family("meta-llama/Llama-3.3-70B-Instruct"),
            Some("llama-3.3-70b-instruct")
        );
        assert_eq!(family("gpt-4ox"), None);
        assert_eq!(family("mock-chat-1"), None);
    }
}
