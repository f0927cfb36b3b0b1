//! The cache key: a SHA-256 over the tenant scope, the resolved model group, the endpoint and
//! every request member that can change the output, each normalised (parsed and re-serialized
//! with sorted keys), so two spellings of the same JSON hit the same entry. Never part of the
//! key, and never stored: the virtual key, request ids, and modelgate's own fields.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::request::JsonRequest;

/// Members that do not change the output: the model alias (the resolved group is in the key
/// instead), streaming (a stream and a complete answer share an entry), the extension, and
/// end-user and logging labels.
const NOT_IN_KEY: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    crate::request::EXTENSION_FIELD,
    "user",
    "metadata",
    "store",
];

/// Bumped when the entry format or key derivation changes, so old entries are never misread.
const FORMAT: &str = "modelgate-cache-v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The key of `request` to `group` within `scope` (an opaque tenant identity); `api` names the
/// operation (`chat_completions`, `embeddings`, or the inbound API of a request in its own
/// shape), so equal bodies of two APIs never share an entry. `None` when a member is not valid
/// JSON (the request is then not cached).
pub fn derive(scope: &str, group: &str, api: &str, request: &JsonRequest) -> Option<CacheKey> {
    // The last occurrence of a duplicated member wins, as it does for every other reader.
    let members: BTreeMap<&str, &[u8]> = request
        .members()
        .filter(|(key, _)| !NOT_IN_KEY.contains(key))
        .collect();
    let mut hash = Sha256::new();
    let mut field = |value: &[u8]| {
        hash.update((value.len() as u64).to_le_bytes());
        hash.update(value);
    };
    field(FORMAT.as_bytes());
    field(scope.as_bytes());
    field(group.as_bytes());
    field(api.as_bytes());
    for (key, raw) in members {
        let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
        field(key.as_bytes());
        field(serde_json::to_string(&value).ok()?.as_bytes());
    }
    Some(CacheKey(hash.finalize().into()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn key(body: &str) -> CacheKey {
        let request = JsonRequest::parse(Bytes::from(body.to_owned())).unwrap();
        derive(
            "org|default|acme",
            "default/chat",
            "chat_completions",
            &request,
        )
        .unwrap()
    }

    #[test]
    fn formatting_order_alias_and_streaming_do_not_change_the_key() {
        let base = key(
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#,
        );
        for same in [
            r#"{ "temperature" : 0.70, "messages" : [ {"content":"hi", "role":"user"} ], "model":"chat-alias" }"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0.7,"stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0.7,"user":"u-1","modelgate":{"cache":true}}"#,
        ] {
            assert_eq!(key(same), base, "{same}");
        }
    }

    #[test]
    fn every_output_changing_parameter_changes_the_key() {
        let base = key(r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#);
        for other in [
            r#"{"model":"chat","messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"top_p":0.5}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"seed":1}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"stop":["x"]}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"n":2}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"tool_choice":"none"}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
        ] {
            assert_ne!(key(other), base, "{other}");
        }
        let request = JsonRequest::parse(Bytes::from_static(
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
        let other_scope = derive(
            "org|default|globex",
            "default/chat",
            "chat_completions",
            &request,
        );
        let other_group = derive(
            "org|default|acme",
            "default/chat-2",
            "chat_completions",
            &request,
        );
        assert_ne!(other_scope, Some(base));
        assert_ne!(other_group, Some(base));
    }

    proptest::proptest! {
        /// Two tenants never share an entry, whatever the body; any change of a member that
        /// changes the answer changes the key; spelling (member order, whitespace) never does.
        #[test]
        fn tenants_are_apart_and_output_members_count(
            content in "[a-z ]{0,40}",
            temperature in 0u8..20,
            tenant in "[a-z]{1,8}",
            other in "[a-z]{1,8}",
            member in proptest::sample::select(vec!["temperature", "max_tokens", "tools", "response_format", "seed", "stop", "top_p"]),
        ) {
            let body = serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": content}],
                "temperature": f64::from(temperature) / 10.0,
            });
            let request = |value: &serde_json::Value| JsonRequest::parse(Bytes::from(value.to_string())).unwrap();
            let base = derive(&format!("org|ns|{tenant}"), "ns/chat", "chat_completions", &request(&body));
            if tenant != other {
                let elsewhere = derive(&format!("org|ns|{other}"), "ns/chat", "chat_completions", &request(&body));
                proptest::prop_assert_ne!(base, elsewhere);
            }
            let mut changed = body.clone();
            changed[member] = serde_json::json!("changed");
            let changed_key = derive(&format!("org|ns|{tenant}"), "ns/chat", "chat_completions", &request(&changed));
            proptest::prop_assert_ne!(base, changed_key);
            let respelled = format!(
                "{{ \"temperature\" : {} ,\n \"messages\": {}, \"model\":\"m\" }}",
                body["temperature"], body["messages"]
            );
            let respelled = JsonRequest::parse(Bytes::from(respelled)).unwrap();
            let respelled_key = derive(&format!("org|ns|{tenant}"), "ns/chat", "chat_completions", &respelled);
            proptest::prop_assert_eq!(base, respelled_key);
        }
    }
}
