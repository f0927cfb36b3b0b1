//! `/v1/embeddings` on Cohere's `POST /v2/embed`.
//!
//! - `input_type`, which Cohere requires and OpenAI has no field for, is `search_document`:
//!   vectors made through a generic embeddings call are most often stored for retrieval, and
//!   that is Cohere's type for stored documents.
//! - `truncate` is `NONE`, so an input longer than the model takes is an error, as at OpenAI,
//!   rather than silently shortened (Cohere's default).
//! - Vectors are asked for as floats; base64, which the OpenAI SDKs ask for by default, is
//!   encoded here. `dimensions` is Cohere's `output_dimension`.
//! - Usage is `meta.billed_units.input_tokens`. At most 96 texts go in one call.

use serde::{Deserialize, Serialize};

use super::{
    super::{
        CallError, Target, Usage,
        chat::EmbeddingsRequest,
        output,
        translated::{Translated, malformed},
    },
    NAME,
};

const INPUT_TYPE: &str = "search_document";
pub const MAX_TEXTS: usize = 96;

#[derive(Serialize)]
struct Embed<'a> {
    model: &'a str,
    texts: Vec<&'a str>,
    input_type: &'static str,
    embedding_types: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<u32>,
    truncate: &'static str,
}

pub fn request(target: &Target<'_>) -> Result<bytes::Bytes, CallError> {
    let request = EmbeddingsRequest::parse(target, NAME)?;
    let texts = request.texts(NAME)?;
    // The framework splits larger requests (`Dialect::embedding_batch`).
    if texts.len() > MAX_TEXTS {
        return Err(CallError::invalid_request(format!(
            "provider {NAME} embeds at most {MAX_TEXTS} inputs per call"
        ))
        .with_param("input"));
    }
    let body = Embed {
        model: &target.deployment.model,
        texts,
        input_type: INPUT_TYPE,
        embedding_types: ["float"],
        output_dimension: request.dimensions,
        truncate: "NONE",
    };
    serde_json::to_vec(&body)
        .map(bytes::Bytes::from)
        .map_err(|e| CallError::invalid_request(format!("the embeddings request: {e}")))
}

#[derive(Deserialize)]
struct Answer {
    embeddings: Embeddings,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Embeddings {
    #[serde(default)]
    float: Option<Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    billed_units: Option<BilledUnits>,
}

#[derive(Deserialize)]
struct BilledUnits {
    #[serde(default)]
    input_tokens: Option<f64>,
}

pub fn response(target: &Target<'_>, body: &[u8]) -> Result<Translated, CallError> {
    let request = EmbeddingsRequest::parse(target, NAME)?;
    let expected = request.texts(NAME)?.len();
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| malformed(NAME, format!("unreadable embed answer: {e}")))?;
    let Some(vectors) = answer.embeddings.float else {
        return Err(malformed(NAME, "the embed answer has no float embeddings"));
    };
    if vectors.len() != expected {
        // A short answer would shift every index: the client would get the wrong vectors.
        return Err(malformed(
            NAME,
            format!("{} embeddings for {expected} inputs", vectors.len()),
        ));
    }
    let base64 = request.wants_base64();
    let tokens = answer
        .meta
        .and_then(|m| m.billed_units)
        .and_then(|b| b.input_tokens)
        .map_or(0, |t| t.max(0.0).round() as u64);
    let usage = Usage {
        prompt_tokens: tokens,
        total_tokens: tokens,
        ..Usage::default()
    };
    Ok(Translated {
        body: output::embeddings(&target.deployment.model, &vectors, base64, usage),
        usage: Some(usage),
    })
}
