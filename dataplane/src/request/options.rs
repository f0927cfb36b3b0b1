//! modelgate's per-request fields: the body extension (`"modelgate": {...}`) and the
//! `x-modelgate-*` headers. Both are read here, once, and never forwarded.

use std::collections::BTreeMap;

use http::HeaderMap;
use modelgate_crds::common::Strategy;
use serde::Deserialize;

use super::{EXTENSION_FIELD, JsonRequest};
use crate::error::ApiError;

const TAGS_HEADER: &str = "x-modelgate-tags";
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
        Ok(Self {
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
