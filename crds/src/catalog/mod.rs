//! The model catalog: what modelgate knows about a deployment's model when its config does not
//! say. Prices come from the `genai-prices` crate; capability tags, context windows and the
//! largest answer of known families from `catalog/models.yaml`, which names its sources.
//!
//! The compiler resolves it once per deployment into the compiled config, so the data plane
//! routes and costs from plain fields and never loads the database. A deployment's own
//! `pricing`, `tags` and `contextWindow` always win over the catalog.

mod families;
mod prices;

use serde::{Deserialize, Serialize};

use crate::model_group::ProviderKind;

pub use families::{Family, family_of};
pub use prices::{ListPrice, PriceTier};

/// What the catalog knows about one deployment's model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogEntry {
    /// The `models.yaml` family that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The family's capability tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Tokens of prompt and answer together the model accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// The list price, from genai-prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<ListPrice>,
}

/// The catalog's entry for `model` served by `provider` (an OpenAI-compatible server is known
/// by its `base_url`), with the prices in effect at `now`; `None` when nothing is known.
pub fn lookup(
    provider: ProviderKind,
    model: &str,
    base_url: Option<&str>,
    now: jiff::Timestamp,
) -> Option<CatalogEntry> {
    if provider == ProviderKind::Mock {
        return None;
    }
    let family = family_of(model);
    let priced = prices::lookup(provider, model, base_url, now);
    if family.is_none() && priced.is_none() {
        return None;
    }
    Some(CatalogEntry {
        family: family.map(|f| f.name.clone()),
        capabilities: family.map(|f| f.tags.clone()).unwrap_or_default(),
        context_window: family
            .and_then(|f| f.context_window)
            .or(priced.as_ref().and_then(|p| p.context_window)),
        max_output_tokens: family.and_then(|f| f.max_output_tokens),
        price: priced.map(|p| p.price),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_known_model_gets_its_family_tags_window_and_price() {
        let claude = lookup(
            ProviderKind::Anthropic,
            "claude-sonnet-4-20250514",
            None,
            now(),
        )
        .unwrap();
        assert_eq!(claude.family.as_deref(), Some("claude-sonnet-4"));
        assert!(claude.capabilities.iter().any(|t| t == "function-calling"));
        assert_eq!(claude.context_window, Some(200_000));
        assert!(claude.price.is_some());
    }

    #[test]
    fn the_mock_and_unknown_models_are_not_in_the_catalog() {
        assert_eq!(lookup(ProviderKind::Mock, "gpt-4o", None, now()), None);
        assert_eq!(
            lookup(ProviderKind::Openai, "mock-chat-1", None, now()),
            None
        );
    }

    #[test]
    fn a_self_hosted_family_gets_tags_but_no_price() {
        let llama = lookup(
            ProviderKind::OpenaiCompatible,
            "meta-llama/Llama-3.3-70B-Instruct",
            Some("http://127.0.0.1:8000/v1"),
            now(),
        )
        .unwrap();
        assert_eq!(llama.family.as_deref(), Some("llama-3.3-70b-instruct"));
        assert!(llama.price.is_none());
    }
}
