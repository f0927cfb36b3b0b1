//! Embedding requests larger than a provider takes in one call (Amazon Titan embeds one text,
//! Cohere 96, Gemini 100): split into batches the provider accepts, sent a few at a time, and
//! put back together in input order as one OpenAI answer, usage summed.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{CallError, UpstreamBody, Usage, error::malformed};
use crate::request::JsonRequest;

/// Batches of one request in flight at once: enough to hide latency, few enough not to trip
/// the provider's own rate limit with one client call.
pub const CONCURRENT_BATCHES: usize = 4;

/// The client's request cut into requests of at most `limit` inputs, or `None` when it fits
/// (or is not a list of texts, which the dialect judges on its own).
pub fn split(request: &JsonRequest, limit: usize) -> Result<Option<Vec<JsonRequest>>, CallError> {
    let limit = limit.max(1);
    let Ok(Some(Value::Array(inputs))) = request.field::<Value>("input") else {
        return Ok(None);
    };
    if inputs.len() <= limit || !inputs.iter().all(Value::is_string) {
        return Ok(None);
    }
    let body: Map<String, Value> = serde_json::from_slice(request.body())
        .map_err(|e| CallError::invalid_request(format!("the embeddings request: {e}")))?;
    inputs
        .chunks(limit)
        .map(|chunk| {
            let mut part = body.clone();
            part.insert("input".to_owned(), Value::Array(chunk.to_vec()));
            let bytes = serde_json::to_vec(&part)
                .map_err(|e| CallError::invalid_request(format!("the embeddings request: {e}")))?;
            JsonRequest::parse(Bytes::from(bytes))
                .map_err(|e| CallError::invalid_request(e.message))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// One answer from the batches' answers, in order: each item's `index` shifted by the inputs
/// before its batch, usage summed.
pub fn merge(provider: &str, answers: Vec<UpstreamBody>) -> Result<UpstreamBody, CallError> {
    let mut data = Vec::new();
    let mut model = Value::Null;
    let mut usage = Usage::default();
    for answer in answers {
        let UpstreamBody::Complete { body, usage: part } = answer else {
            return Err(malformed(
                provider,
                "an embeddings batch answered with a stream",
            ));
        };
        let mut list: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|e| malformed(provider, format!("an embeddings batch: {e}")))?;
        let offset = data.len() as u64;
        let Some(Value::Array(items)) = list.remove("data") else {
            return Err(malformed(provider, "an embeddings batch has no `data`"));
        };
        for mut item in items {
            let index = item.get("index").and_then(Value::as_u64).unwrap_or(0);
            item["index"] = Value::from(offset + index);
            data.push(item);
        }
        if model.is_null() {
            model = list.remove("model").unwrap_or(Value::Null);
        }
        if let Some(part) = part {
            usage.prompt_tokens = usage.prompt_tokens.saturating_add(part.prompt_tokens);
            usage.total_tokens = usage.total_tokens.saturating_add(part.total_tokens);
        }
    }
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
    });
    Ok(UpstreamBody::Complete {
        body: Bytes::from(body.to_string()),
        usage: Some(usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> JsonRequest {
        JsonRequest::parse(Bytes::from(body.to_owned())).unwrap()
    }

    #[test]
    fn splits_only_lists_of_texts_longer_than_the_limit() {
        let big = request(r#"{"model":"m","input":["a","b","c","d","e"],"dimensions":8}"#);
        let parts = split(&big, 2).unwrap().unwrap();
        let inputs: Vec<Value> = parts
            .iter()
            .map(|p| p.field::<Value>("input").unwrap().unwrap())
            .collect();
        assert_eq!(
            inputs,
            vec![
                serde_json::json!(["a", "b"]),
                serde_json::json!(["c", "d"]),
                serde_json::json!(["e"])
            ]
        );
        assert!(
            parts
                .iter()
                .all(|p| p.field::<u32>("dimensions").unwrap() == Some(8))
        );
        for small in [
            r#"{"input":["a","b"]}"#,
            r#"{"input":"a"}"#,
            r#"{"input":[[1,2],[3],[4]]}"#,
        ] {
            assert!(split(&request(small), 2).unwrap().is_none(), "{small}");
        }
    }

    #[test]
    fn merges_in_order_with_indexes_shifted_and_usage_summed() {
        let answer = |items: &[(u64, f32)], tokens: u64| {
            UpstreamBody::Complete {
            body: Bytes::from(
                serde_json::json!({
                    "object": "list", "model": "m",
                    "data": items.iter().map(|(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": [v]})).collect::<Vec<_>>(),
                })
                .to_string(),
            ),
            usage: Some(Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
                ..Usage::default()
            }),
        }
        };
        let merged = merge(
            "p",
            vec![answer(&[(0, 0.5), (1, 0.25)], 3), answer(&[(0, 0.125)], 2)],
        )
        .unwrap();
        let UpstreamBody::Complete { body, usage } = merged else {
            panic!("a complete answer")
        };
        let value: Value = serde_json::from_slice(&body).unwrap();
        let indexes: Vec<u64> = value["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, vec![0, 1, 2]);
        assert_eq!(value["data"][2]["embedding"], serde_json::json!([0.125]));
        assert_eq!(value["usage"]["prompt_tokens"], 5);
        assert_eq!(usage.map(|u| u.prompt_tokens), Some(5));
    }
}
