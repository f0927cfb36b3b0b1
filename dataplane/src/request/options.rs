//! modelgate's per-request fields: the body extension (`"modelgate": {...}`) and the
//! `x-modelgate-*` headers. Both are read here, once, and never forwarded.

use std::collections::BTreeMap;

use http::HeaderMap;
use modelgate_crds::common::Strategy;
use serde::Deserialize;

use super::{EXTENSION_FIELD, JsonRequest};
use crate::{
    error::ApiError,
    trace::{SpanIds, TRACEPARENT},
};

const TAGS_HEADER: &str = "x-modelgate-tags";
const SPEND_TAGS_HEADER: &str = "x-modelgate-spend-tags";
/// More spend tags than any policy may allow (a policy lists at most 8 keys).
const MAX_SPEND_TAGS: usize = 8;
/// On a request, `false` opts out of the cache; on an answer, what the cache did.
pub const CACHE_HEADER: &str = "x-modelgate-cache";
const STRATEGY_HEADER: &str = "x-modelgate-strategy";
const RETRIES_HEADER: &str = "x-modelgate-retries";
const MAX_METADATA_ENTRIES: usize = 16;
const MAX_METADATA_BYTES: usize = 256;

/// What the caller asked of the gateway itself.
#[derive(Debug, Default)]
pub struct Options {
    /// Capability tags named in the body extension (they replace the key's defaults).
    pub body_tags: Option<Vec<String>>,
    /// The `x-modelgate-tags` header, as sent.
    pub header_tags: Option<String>,
    /// `false` keeps the call to the requested group's own deployments.
    pub fallbacks: bool,
    /// Free-form labels copied into the decision log.
    pub metadata: Option<BTreeMap<String, String>>,
    /// `false` keeps this request out of the response cache (no lookup, no store).
    pub cache: bool,
    /// Fewer retries than the policy allows (never more).
    pub retries: Option<u32>,
    /// A strategy for this request, where the policy allows overrides.
    pub strategy: Option<Strategy>,
    /// Spend tags (`key=value`) from `x-modelgate-spend-tags` and the body's `metadata.tags`,
    /// well-formed but not yet checked against the caller's policy.
    pub spend_tags: BTreeMap<String, String>,
    /// The client's W3C trace context, when it sent a well-formed one.
    pub traceparent: Option<SpanIds>,
}

/// The body's OpenAI `metadata`, as far as spend tags go: `tags` is `"k=v,k2=v2"` (OpenAI's
/// metadata values are strings) or a list of `"k=v"`. The member is forwarded as sent.
#[derive(Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    tags: Option<TagList>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TagList {
    Joined(String),
    Each(Vec<String>),
}

/// The body extension.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extension {
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    fallbacks: Option<bool>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    cache: Option<bool>,
}

impl Options {
    pub fn read(headers: &HeaderMap, body: &JsonRequest) -> Result<Self, ApiError> {
        let extension: Extension = body
            .field(EXTENSION_FIELD)
            .map_err(|e| {
                ApiError::invalid_request(format!("modelgate extension: {}", e.message))
                    .with_param(EXTENSION_FIELD)
            })?
            .unwrap_or_default();
        let cache_opt_out = header_text(headers, CACHE_HEADER)?
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        let retries = header_text(headers, RETRIES_HEADER)?
            .map(|v| {
                v.trim().parse::<u32>().map_err(|_| {
                    ApiError::invalid_request(format!("`{RETRIES_HEADER}` must be a whole number"))
                        .with_param(RETRIES_HEADER)
                })
            })
            .transpose()?;
        let strategy = header_text(headers, STRATEGY_HEADER)?
            .map(parse_strategy)
            .transpose()?;
        let mut spend_tags = BTreeMap::new();
        if let Some(header) = header_text(headers, SPEND_TAGS_HEADER)? {
            add_spend_tags(&mut spend_tags, header.split(','), SPEND_TAGS_HEADER)?;
        }
        // Another shape of `metadata` is the provider's business, not a spend tag.
        let metadata = body.field::<Metadata>("metadata").ok().flatten();
        match metadata.and_then(|m| m.tags) {
            Some(TagList::Joined(tags)) => {
                add_spend_tags(&mut spend_tags, tags.split(','), "metadata.tags")?;
            }
            Some(TagList::Each(tags)) => {
                add_spend_tags(
                    &mut spend_tags,
                    tags.iter().map(String::as_str),
                    "metadata.tags",
                )?;
            }
            None => {}
        }
        let traceparent = headers
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .and_then(SpanIds::parse);
        Ok(Self {
            traceparent,
            spend_tags,
            body_tags: extension.tags,
            header_tags: header_text(headers, TAGS_HEADER)?.map(str::to_owned),
            fallbacks: extension.fallbacks.unwrap_or(true),
            metadata: checked_metadata(extension.metadata)?,
            cache: !cache_opt_out && extension.cache != Some(false),
            retries,
            strategy,
        })
    }
}

/// A header's value as text; a header that is not visible ASCII is a 400.
fn header_text<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid_request(format!("`{name}` must be ASCII text")))
        })
        .transpose()
}

fn parse_strategy(value: &str) -> Result<Strategy, ApiError> {
    serde_json::from_value(serde_json::Value::String(value.trim().to_owned()))
        .map_err(|_| ApiError::invalid_strategy(value))
}

/// Adds `key=value` pairs; a malformed pair, a key given twice or too many tags is a 400.
fn add_spend_tags<'a>(
    tags: &mut BTreeMap<String, String>,
    pairs: impl Iterator<Item = &'a str>,
    param: &'static str,
) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::invalid_spend_tag(message, param);
    for pair in pairs.map(str::trim).filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=').map(|(k, v)| (k.trim(), v.trim())) else {
            return Err(invalid(format!("`{pair}` is not `key=value`")));
        };
        let key_ok = key.len() <= 32
            && key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !key_ok {
            return Err(invalid(format!(
                "the key `{key}` must be lowercase letters, digits and `_`, at most 32"
            )));
        }
        let value_ok = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c));
        if !value_ok {
            return Err(invalid(format!(
                "the value of `{key}` must be 1 to 64 letters, digits and `._:/-`"
            )));
        }
        if tags.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(invalid(format!("the key `{key}` is given twice")));
        }
        if tags.len() > MAX_SPEND_TAGS {
            return Err(invalid(format!("at most {MAX_SPEND_TAGS} spend tags")));
        }
    }
    Ok(())
}

fn checked_metadata(
    metadata: Option<BTreeMap<String, String>>,
) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    if let Some(m) = &metadata
        && (m.len() > MAX_METADATA_ENTRIES
            || m.iter()
                .any(|(k, v)| k.len() + v.len() > MAX_METADATA_BYTES))
    {
        return Err(ApiError::invalid_request(format!(
            "modelgate.metadata takes at most {MAX_METADATA_ENTRIES} entries of at most {MAX_METADATA_BYTES} bytes each"
        ))
        .with_param(EXTENSION_FIELD));
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderValue;

    use super::*;

    fn read(header: Option<&str>, body: &str) -> Result<Options, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(value) = header {
            headers.insert(SPEND_TAGS_HEADER, HeaderValue::from_str(value).unwrap());
        }
        Options::read(
            &headers,
            &JsonRequest::parse(Bytes::from(body.to_owned())).unwrap(),
        )
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn spend_tags_come_from_the_header_and_from_metadata_tags_in_either_shape() {
        let both = read(
            Some("stage=embed, feature = search"),
            r#"{"metadata":{"tags":"customer=acme-1","user":"u"}}"#,
        )
        .unwrap();
        assert_eq!(
            both.spend_tags,
            tags(&[
                ("stage", "embed"),
                ("feature", "search"),
                ("customer", "acme-1")
            ])
        );
        let listed = read(None, r#"{"metadata":{"tags":["stage=rerank"]}}"#).unwrap();
        assert_eq!(listed.spend_tags, tags(&[("stage", "rerank")]));
        // Metadata of another shape is the provider's business.
        let other = read(None, r#"{"metadata":{"tags":{"a":1}}}"#).unwrap();
        assert!(other.spend_tags.is_empty());
    }

    #[test]
    fn a_malformed_or_repeated_spend_tag_is_a_400_naming_it() {
        for (header, body, says) in [
            (Some("stage"), "{}", "`stage` is not `key=value`"),
            (Some("Stage=x"), "{}", "the key `Stage`"),
            (Some("stage=a b"), "{}", "the value of `stage`"),
            (Some("stage=a,stage=b"), "{}", "`stage` is given twice"),
            (
                Some("stage=a"),
                r#"{"metadata":{"tags":"stage=b"}}"#,
                "`stage` is given twice",
            ),
            (
                Some("a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1"),
                "{}",
                "at most 8",
            ),
        ] {
            let error = read(header, body).err().unwrap();
            assert_eq!(error.code, "invalid_spend_tag");
            assert!(
                error.message.contains(says),
                "{header:?}: {}",
                error.message
            );
        }
    }
}
