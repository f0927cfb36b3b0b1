//! InvokeModel embeddings in the model's own format: Amazon Titan (`inputText`, one text) and
//! Cohere Embed (`texts`, up to 96). Like Bedrock, a body with members the model does not know
//! is refused.

use http::StatusCode;
use serde_json::{Value, json};

use crate::{native::Reply, reply};

/// The answer of model `model` (as in the path, percent-encoded) to `body`, or the
/// ValidationException message.
pub fn invoke(model: &str, body: &Value) -> Result<Reply, String> {
    if model.contains("cohere.embed") {
        cohere(body)
    } else {
        titan(body)
    }
}

fn titan(body: &Value) -> Result<Reply, String> {
    only(
        body,
        &["inputText", "dimensions", "normalize", "embeddingTypes"],
    )?;
    let text = body
        .get("inputText")
        .and_then(Value::as_str)
        .ok_or("Malformed input request: #: required key [inputText] not found, please reformat your input and try again.")?;
    let dimensions = match body.get("dimensions") {
        None => None,
        Some(d) => Some(
            d.as_u64()
                .filter(|d| matches!(d, 256 | 512 | 1024))
                .ok_or("Malformed input request: #/dimensions: 256, 512 or 1024")?,
        ),
    };
    let tokens = tokens(&[text]);
    Ok(with_token_count(
        json!({"embedding": text_vector(text, dimensions), "inputTextTokenCount": tokens}),
        tokens,
    ))
}

/// Titan embeds one text per call, so its vector depends on the text itself (a batch position
/// would be 0 for every call): component i is (h + 1) / (i + 2), h a small hash of the text.
fn text_vector(text: &str, dimensions: Option<u64>) -> Vec<f32> {
    let h = text.bytes().fold(0u32, |h, b| (h * 31 + u32::from(b)) % 97) as f32;
    (0..dimensions.unwrap_or(8))
        .map(|i| (h + 1.0) / (i as f32 + 2.0))
        .collect()
}

fn cohere(body: &Value) -> Result<Reply, String> {
    only(
        body,
        &["texts", "input_type", "truncate", "embedding_types"],
    )?;
    let texts: Vec<&str> = body
        .get("texts")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .filter(|t: &Vec<&str>| (1..=96).contains(&t.len()))
        .ok_or("Malformed input request: #/texts: 1 to 96 strings are required")?;
    let input_type = body.get("input_type").and_then(Value::as_str);
    if !matches!(
        input_type,
        Some("search_document" | "search_query" | "classification" | "clustering")
    ) {
        return Err("Malformed input request: #: required key [input_type] not found".to_owned());
    }
    let vectors = vectors(&texts, None);
    let embeddings = if body.get("embedding_types").is_some() {
        json!({"float": vectors})
    } else {
        json!(vectors)
    };
    let kind = if embeddings.is_object() {
        "embeddings_by_type"
    } else {
        "embeddings_floats"
    };
    Ok(with_token_count(
        json!({"id": "fake-embed", "embeddings": embeddings, "texts": texts, "response_type": kind}),
        tokens(&texts),
    ))
}

fn only(body: &Value, known: &[&str]) -> Result<(), String> {
    let object = body
        .as_object()
        .ok_or("Malformed input request: not a JSON object")?;
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(format!(
            "Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input and try again."
        )),
        None => Ok(()),
    }
}

/// The fake's deterministic vectors (the same as its OpenAI embeddings).
fn vectors(texts: &[&str], dimensions: Option<u64>) -> Vec<Value> {
    let mut request = json!({"input": texts});
    if let Some(dimensions) = dimensions {
        request["dimensions"] = json!(dimensions);
    }
    let list = reply::embeddings(&request);
    list["data"]
        .as_array()
        .map(|data| data.iter().map(|d| d["embedding"].clone()).collect())
        .unwrap_or_default()
}

fn tokens(texts: &[&str]) -> u64 {
    texts.iter().map(|t| (t.len() as u64 / 4).max(1)).sum()
}

/// InvokeModel reports the input token count in a header too.
fn with_token_count(body: Value, tokens: u64) -> Reply {
    Reply::Json {
        status: StatusCode::OK,
        body,
        headers: vec![("x-amzn-bedrock-input-token-count", tokens.to_string())],
    }
}
