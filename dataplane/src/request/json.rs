//! The request body, parsed only as far as the gateway needs. One pass validates the JSON and
//! records where each top-level member's value lies in the original bytes; forwarding copies
//! those bytes verbatim (no re-serialization), replacing only `model` and dropping `modelgate`.

use std::{fmt, ops::Range};

use bytes::Bytes;
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeOwned, MapAccess, Visitor},
};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// modelgate's own request extension, read and stripped before forwarding.
pub const EXTENSION_FIELD: &str = "modelgate";

const STREAM_OPTIONS: &str = "stream_options";

/// A JSON object body with the position of each top-level member.
pub struct JsonRequest {
    body: Bytes,
    members: Vec<Member>,
}

struct Member {
    key: Key,
    value: Range<usize>,
}

/// A member's name: where it lies in the body when written without escapes (the common case,
/// which costs no allocation), else unescaped into its own string.
enum Key {
    InBody(Range<usize>),
    Unescaped(Box<str>),
}

impl JsonRequest {
    /// Validates that `body` is one JSON object.
    pub fn parse(body: Bytes) -> Result<Self, ApiError> {
        let members = {
            let mut de = serde_json::Deserializer::from_slice(&body);
            let spans = de
                .deserialize_map(SpanVisitor {
                    base: body.as_ptr() as usize,
                })
                .map_err(ApiError::invalid_json)?;
            de.end().map_err(ApiError::invalid_json)?;
            spans
        };
        let request = Self { body, members };
        // A member given twice could be read one way here (routing, limits, the cache key) and
        // the other way upstream: the call that ran would not be the one authorized.
        for (index, member) in request.members.iter().enumerate() {
            let key = request.key_bytes(member);
            if request.members[..index]
                .iter()
                .any(|m| request.key_bytes(m) == key)
            {
                return Err(ApiError::duplicate_field(request.key(member)));
            }
        }
        Ok(request)
    }

    /// A member's name as bytes, for comparisons: an unescaped name in the body is its text.
    fn key_bytes<'a>(&'a self, member: &'a Member) -> &'a [u8] {
        match &member.key {
            Key::InBody(range) => &self.body[range.clone()],
            Key::Unescaped(key) => key.as_bytes(),
        }
    }

    /// A member's name as text, where it is written out.
    fn key<'a>(&'a self, member: &'a Member) -> &'a str {
        // The parser read these bytes as a string, so they are UTF-8.
        std::str::from_utf8(self.key_bytes(member)).unwrap_or_default()
    }

    /// The raw JSON text of a top-level member.
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        self.members
            .iter()
            .rev()
            .find(|m| self.key_bytes(m) == key.as_bytes())
            .map(|m| &self.body[m.value.clone()])
    }

    /// Deserializes one top-level member; absent and `null` are `None`.
    pub fn field<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_slice::<Option<T>>(raw)
                .map_err(|e| ApiError::invalid_request(format!("`{key}`: {e}")).with_param(key)),
        }
    }

    /// The body to send upstream: every member but `model` and the extension copied byte for
    /// byte, and `model` set to the deployment's upstream id. For a stream, `stream_options`
    /// gets `include_usage: true` (its other fields kept): a streamed call must report its usage,
    /// or it could not be costed against budgets. Only that small member is re-serialized.
    pub fn forward(&self, model: &str, stream: bool) -> Bytes {
        let mut out = Vec::with_capacity(self.body.len() + model.len() + 48);
        out.push(b'{');
        for member in &self.members {
            let key = self.key(member);
            if key == "model" || key == EXTENSION_FIELD || (stream && key == STREAM_OPTIONS) {
                continue;
            }
            push_json_string(&mut out, key);
            out.push(b':');
            out.extend_from_slice(&self.body[member.value.clone()]);
            out.push(b',');
        }
        if stream {
            let mut options = self
                .raw(STREAM_OPTIONS)
                .and_then(|raw| {
                    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw).ok()
                })
                .unwrap_or_default();
            options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
            push_json_string(&mut out, STREAM_OPTIONS);
            out.push(b':');
            // Serializing a map of JSON values into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &options);
            out.push(b',');
        }
        out.extend_from_slice(b"\"model\":");
        push_json_string(&mut out, model);
        out.push(b'}');
        Bytes::from(out)
    }

    /// The body for a provider that speaks the client's own API: the body as received, with
    /// `model` set to the deployment's upstream id in its place and the extension left out.
    pub fn with_model(&self, model: &str) -> Bytes {
        let mut out = Vec::with_capacity(self.body.len() + model.len() + 16);
        out.push(b'{');
        let mut first = true;
        for member in &self.members {
            let key = self.key(member);
            if key == EXTENSION_FIELD {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            push_json_string(&mut out, key);
            out.push(b':');
            if key == "model" {
                push_json_string(&mut out, model);
            } else {
                out.extend_from_slice(&self.body[member.value.clone()]);
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }

    /// Every top-level member as (key, raw JSON value), in body order.
    pub fn members(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.members
            .iter()
            .map(|m| (self.key(m), &self.body[m.value.clone()]))
    }

    /// The whole body as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

struct SpanVisitor {
    base: usize,
}

impl<'de> Visitor<'de> for SpanVisitor {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(16);
        while let Some(key) = map.next_key::<KeyString<'de>>()? {
            let key = match key {
                KeyString::Borrowed(text) => Key::InBody(self.span(text)?),
                KeyString::Owned(text) => Key::Unescaped(text),
            };
            let raw: &'de RawValue = map.next_value()?;
            let value = self.span(raw.get())?;
            members.push(Member { key, value });
        }
        Ok(members)
    }
}

impl SpanVisitor {
    /// Where `text`, borrowed from the body, lies in it.
    fn span<E: de::Error>(&self, text: &str) -> Result<Range<usize>, E> {
        let start = (text.as_ptr() as usize)
            .checked_sub(self.base)
            .ok_or_else(|| E::custom("value outside the body"))?;
        Ok(start..start + text.len())
    }
}

/// An object key, borrowed when unescaped (the common case) and owned otherwise.
enum KeyString<'de> {
    Borrowed(&'de str),
    Owned(Box<str>),
}

impl<'de> Deserialize<'de> for KeyString<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyString<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyString<'de>, E> {
                Ok(KeyString::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyString<'de>, E> {
                Ok(KeyString::Owned(v.into()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_given_twice_is_refused_however_it_is_spelled() {
        for body in [
            r#"{"model":"cheap","messages":[],"model":"expensive"}"#,
            r#"{"model":"cheap","mod\u0065l":"expensive"}"#,
        ] {
            let error = JsonRequest::parse(Bytes::from(body)).err().unwrap();
            assert_eq!(error.code, "duplicate_field");
            assert_eq!(error.param.as_deref(), Some("model"));
        }
        // Nested objects may repeat keys of the top level.
        assert!(
            JsonRequest::parse(Bytes::from(r#"{"model":"m","metadata":{"model":"x"}}"#)).is_ok()
        );
    }

    fn parse(s: &str) -> JsonRequest {
        JsonRequest::parse(Bytes::from(s.to_owned())).unwrap()
    }

    #[test]
    fn forwards_members_byte_for_byte_with_model_replaced_and_extension_dropped() {
        let body = r#"{ "model" : "alias", "messages":[{"role":"user","content":"h\u00e9 \"q\""}],
            "modelgate": {"metadata": {"a": "b"}}, "temperature": 0.70, "x": {"nested": [1, 2.50]} }"#;
        let forwarded = parse(body).forward("upstream-id", false);
        let text = std::str::from_utf8(&forwarded).unwrap();
        assert_eq!(
            text,
            r#"{"messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.70,"x":{"nested": [1, 2.50]},"model":"upstream-id"}"#
        );
        let value: serde_json::Value = serde_json::from_slice(&forwarded).unwrap();
        assert!(value.get("modelgate").is_none());
    }

    #[test]
    fn reads_fields_and_treats_null_as_absent() {
        let req = parse(r#"{"model":"m","stream":true,"n":null}"#);
        assert_eq!(req.field::<String>("model").unwrap().as_deref(), Some("m"));
        assert_eq!(req.field::<bool>("stream").unwrap(), Some(true));
        assert_eq!(req.field::<u32>("n").unwrap(), None);
        assert_eq!(req.field::<u32>("absent").unwrap(), None);
        let err = req.field::<u32>("model").unwrap_err();
        assert_eq!(err.code, "invalid_request");
        assert_eq!(err.param.as_deref(), Some("model"));
    }

    #[test]
    fn escaped_keys_are_unescaped_and_reescaped() {
        let forwarded = parse(r#"{"a\"b":1,"model":"m"}"#).forward("u", false);
        assert_eq!(
            std::str::from_utf8(&forwarded).unwrap(),
            r#"{"a\"b":1,"model":"u"}"#
        );
    }

    #[test]
    fn rejects_anything_but_one_object() {
        for body in ["", "[]", "\"s\"", "{\"a\":1} {}", "{\"a\":", "nul"] {
            let err = JsonRequest::parse(Bytes::from(body))
                .err()
                .unwrap_or_else(|| panic!("{body:?} accepted"));
            assert_eq!(err.code, "invalid_json", "{body:?}");
        }
    }

    #[test]
    fn a_stream_always_asks_for_usage_and_keeps_its_other_stream_options() {
        let plain = parse(r#"{"model":"m","stream":true,"messages":[]}"#).forward("u", true);
        let value: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(
            value["stream_options"],
            serde_json::json!({"include_usage": true})
        );
        let declined =
            parse(r#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}"#)
                .forward("u", true);
        let value: serde_json::Value = serde_json::from_slice(&declined).unwrap();
        assert_eq!(
            value["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
    }

    #[test]
    fn a_missing_model_is_still_added_upstream() {
        let forwarded = parse(r#"{}"#).forward("u", false);
        assert_eq!(&forwarded[..], br#"{"model":"u"}"#);
    }
}
