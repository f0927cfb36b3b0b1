//! Capability tags: what a request needs (vision, function-calling, long-context, ...).
//! A request's own tags (body `modelgate.tags`, header `x-modelgate-tags`) replace the key's
//! defaults, which replace the policy's; tags the request implies are always added: image
//! content parts need `vision`, tools need `function-calling`.

use serde_json::Value;

use crate::{error::ApiError, request::JsonRequest};

pub const VISION: &str = "vision";
pub const FUNCTION_CALLING: &str = "function-calling";
const MAX_TAGS: usize = 16;
const MAX_TAG_LEN: usize = 63;

/// Tags as they arrived with one request.
#[derive(Debug, Default, Clone)]
pub struct RequestTags {
    /// Named by the caller (body and header together), if at all.
    pub explicit: Option<Vec<String>>,
    /// Implied by the request's content.
    pub implied: Vec<&'static str>,
}

impl RequestTags {
    /// Reads the explicit tags from the body extension and the header, and infers the implied ones.
    pub fn from_request(
        request: &JsonRequest,
        body_tags: Option<Vec<String>>,
        header: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut explicit: Option<Vec<String>> = None;
        for tag in body_tags.into_iter().flatten().chain(
            header
                .into_iter()
                .flat_map(|h| h.split(',').map(str::to_owned)),
        ) {
            let tag = tag.trim().to_ascii_lowercase();
            if tag.is_empty() {
                continue;
            }
            check_tag(&tag)?;
            let list = explicit.get_or_insert_with(Vec::new);
            if !list.contains(&tag) {
                list.push(tag);
            }
        }
        if explicit.as_ref().is_some_and(|t| t.len() > MAX_TAGS) {
            return Err(
                ApiError::invalid_request(format!("at most {MAX_TAGS} capability tags"))
                    .with_param("modelgate.tags"),
            );
        }
        Ok(Self {
            explicit,
            implied: implied(request),
        })
    }

    /// The tags every candidate must carry, sorted and without duplicates.
    pub fn required(&self, key_defaults: &[String], policy_defaults: &[String]) -> Vec<String> {
        let chosen: &[String] = match &self.explicit {
            Some(tags) => tags,
            None if !key_defaults.is_empty() => key_defaults,
            None => policy_defaults,
        };
        let mut required: Vec<String> = chosen
            .iter()
            .cloned()
            .chain(self.implied.iter().map(|t| (*t).to_owned()))
            .collect();
        required.sort_unstable();
        required.dedup();
        required
    }
}

fn check_tag(tag: &str) -> Result<(), ApiError> {
    let valid = tag.len() <= MAX_TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_request(
            "capability tags are lowercase letters, digits and '-', at most 63 characters",
        )
        .with_param("modelgate.tags"))
    }
}

/// Tags the request's content needs.
fn implied(request: &JsonRequest) -> Vec<&'static str> {
    let mut tags = Vec::new();
    if has_items(request.raw("tools")) || has_items(request.raw("functions")) {
        tags.push(FUNCTION_CALLING);
    }
    if has_image_parts(request.raw("messages")) {
        tags.push(VISION);
    }
    tags
}

/// A non-empty JSON array.
fn has_items(raw: Option<&[u8]>) -> bool {
    raw.is_some_and(|r| {
        r.first() == Some(&b'[')
            && r.iter()
                .skip(1)
                .any(|b| !b.is_ascii_whitespace() && *b != b']')
    })
}

/// Whether any message has an `image_url` content part. The bytes are scanned first, so text-only
/// requests are never parsed.
fn has_image_parts(raw: Option<&[u8]>) -> bool {
    let Some(raw) = raw else {
        return false;
    };
    if memchr::memmem::find(raw, b"image_url").is_none() {
        return false;
    }
    let Ok(Value::Array(messages)) = serde_json::from_slice::<Value>(raw) else {
        return false;
    };
    messages.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts
                    .iter()
                    .any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
            })
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn request(body: &str) -> JsonRequest {
        JsonRequest::parse(Bytes::from(body.to_owned())).unwrap()
    }

    #[test]
    fn images_and_tools_imply_tags() {
        let image = request(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]}]}"#,
        );
        assert_eq!(implied(&image), vec![VISION]);
        let text_mentioning_images =
            request(r#"{"messages":[{"role":"user","content":"what is an image_url?"}]}"#);
        assert!(implied(&text_mentioning_images).is_empty());
        let tools =
            request(r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f"}}]}"#);
        assert_eq!(implied(&tools), vec![FUNCTION_CALLING]);
        assert!(implied(&request(r#"{"tools":[ ]}"#)).is_empty());
    }

    #[test]
    fn request_tags_replace_defaults_and_implied_tags_always_apply() {
        let req = request(r#"{"tools":[{"type":"function","function":{"name":"f"}}]}"#);
        let with_header =
            RequestTags::from_request(&req, Some(vec!["Code".into()]), Some(" long-context ,code"))
                .unwrap();
        let key = vec!["multilingual".to_owned()];
        assert_eq!(
            with_header.required(&key, &[]),
            vec!["code", "function-calling", "long-context"]
        );
        let without = RequestTags::from_request(&req, None, None).unwrap();
        assert_eq!(
            without.required(&key, &["vision".to_owned()]),
            vec!["function-calling", "multilingual"]
        );
        assert_eq!(
            without.required(&[], &["vision".to_owned()]),
            vec!["function-calling", "vision"]
        );
    }

    #[test]
    fn malformed_tags_are_refused() {
        let req = request("{}");
        for bad in ["has space", "UPPER_", "x/y"] {
            let err = RequestTags::from_request(&req, None, Some(bad)).unwrap_err();
            assert_eq!(err.code, "invalid_request", "{bad}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
        assert!(RequestTags::from_request(&req, Some(many), None).is_err());
    }
}
