//! `/v1/embeddings` on Google: the Gemini API's `batchEmbedContents` (one request per text, no
//! token counts in the answer, so usage is reported as 0) and Vertex AI's `predict` (one
//! instance per text, token counts per prediction). A client request with more texts than one
//! call takes is split by the framework (`batch`). `dimensions` becomes `outputDimensionality`;
//! Google does not re-normalise vectors it shortens, and OpenAI's are unit vectors, so shortened
//! vectors are scaled back to length 1 here.

use serde::{Deserialize, Serialize};

use super::Flavor;
use crate::provider::{
    CallError, Target, Usage,
    chat::EmbeddingsRequest,
    output,
    translated::{Translated, malformed},
};

/// The most texts one upstream call takes: `batchEmbedContents` takes 100 requests, Vertex's
/// `predict` 250 instances, except for `gemini-embedding-001`, which Vertex embeds one per call.
pub fn batch(flavor: Flavor, model: &str) -> usize {
    match flavor {
        Flavor::Gemini => 100,
        Flavor::Vertex if model.starts_with("gemini-embedding-001") => 1,
        Flavor::Vertex => 250,
    }
}

/// The method (after `:` in the URL) and body of the upstream call.
pub fn request(
    flavor: Flavor,
    target: &Target<'_>,
    model: &str,
) -> Result<(&'static str, Vec<u8>), CallError> {
    let provider = flavor.name();
    let request = EmbeddingsRequest::parse(target, provider)?;
    let texts = request.texts(provider)?;
    if texts.is_empty() {
        return Err(CallError::invalid_request("`input` must not be empty").with_param("input"));
    }
    // The framework splits larger requests into batches of this size; this only guards a
    // caller that did not.
    let limit = batch(flavor, model);
    if texts.len() > limit {
        return Err(CallError::invalid_request(format!(
            "provider {provider} embeds at most {limit} inputs per call with this model"
        ))
        .with_param("input"));
    }
    let body = match flavor {
        Flavor::Gemini => {
            let model = format!("models/{model}");
            let requests: Vec<EmbedContentRequest<'_>> = texts
                .iter()
                .map(|text| EmbedContentRequest {
                    model: &model,
                    content: EmbedContent {
                        parts: [TextPart { text }],
                    },
                    output_dimensionality: request.dimensions,
                })
                .collect();
            serde_json::to_vec(&BatchEmbedContentsRequest { requests })
        }
        Flavor::Vertex => serde_json::to_vec(&PredictRequest {
            instances: texts.iter().map(|content| Instance { content }).collect(),
            parameters: request.dimensions.map(|output_dimensionality| Parameters {
                output_dimensionality,
            }),
        }),
    }
    .map_err(|e| malformed(provider, e))?;
    let method = match flavor {
        Flavor::Gemini => "batchEmbedContents",
        Flavor::Vertex => "predict",
    };
    Ok((method, body))
}

/// The answer as an OpenAI embeddings `list`, in the client's encoding.
pub fn response(
    flavor: Flavor,
    target: &Target<'_>,
    model: &str,
    body: &[u8],
) -> Result<Translated, CallError> {
    let provider = flavor.name();
    let request = EmbeddingsRequest::parse(target, provider)?;
    let expected = request.texts(provider)?.len();
    let (vectors, usage) = match flavor {
        Flavor::Gemini => {
            let answer: BatchEmbedContentsResponse = serde_json::from_slice(body)
                .map_err(|e| malformed(provider, format!("the embeddings answer: {e}")))?;
            let vectors = answer.embeddings.into_iter().map(|e| e.values).collect();
            (vectors, Usage::default())
        }
        Flavor::Vertex => {
            let answer: PredictResponse = serde_json::from_slice(body)
                .map_err(|e| malformed(provider, format!("the embeddings answer: {e}")))?;
            let tokens = answer
                .predictions
                .iter()
                .map(|p| p.embeddings.statistics.token_count)
                .sum::<f64>() as u64;
            let vectors = answer
                .predictions
                .into_iter()
                .map(|p| p.embeddings.values)
                .collect();
            let usage = Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
                ..Usage::default()
            };
            (vectors, usage)
        }
    };
    let mut vectors: Vec<Vec<f32>> = vectors;
    if request.dimensions.is_some() {
        vectors.iter_mut().for_each(|v| normalise(v));
    }
    if vectors.len() != expected {
        return Err(malformed(
            provider,
            format!("{} embeddings for {expected} inputs", vectors.len()),
        ));
    }
    Ok(Translated {
        body: output::embeddings(model, &vectors, request.wants_base64(), usage),
        usage: Some(usage),
    })
}

/// Scales `vector` to length 1 (a zero or broken vector is left as it is).
fn normalise(vector: &mut [f32]) {
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in vector.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

#[derive(Serialize)]
struct BatchEmbedContentsRequest<'a> {
    requests: Vec<EmbedContentRequest<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedContentRequest<'a> {
    model: &'a str,
    content: EmbedContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u32>,
}

#[derive(Serialize)]
struct EmbedContent<'a> {
    parts: [TextPart<'a>; 1],
}

#[derive(Serialize)]
struct TextPart<'a> {
    text: &'a str,
}

#[derive(Deserialize)]
struct BatchEmbedContentsResponse {
    #[serde(default)]
    embeddings: Vec<Values>,
}

#[derive(Deserialize)]
struct Values {
    #[serde(default)]
    values: Vec<f32>,
}

#[derive(Serialize)]
struct PredictRequest<'a> {
    instances: Vec<Instance<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Parameters>,
}

#[derive(Serialize)]
struct Instance<'a> {
    content: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Parameters {
    output_dimensionality: u32,
}

#[derive(Deserialize)]
struct PredictResponse {
    #[serde(default)]
    predictions: Vec<Prediction>,
}

#[derive(Deserialize)]
struct Prediction {
    embeddings: PredictedEmbedding,
}

#[derive(Deserialize)]
struct PredictedEmbedding {
    #[serde(default)]
    values: Vec<f32>,
    #[serde(default)]
    statistics: Statistics,
}

/// `token_count` is a JSON number that Vertex writes as a float (`3.0`) on some models.
#[derive(Default, Deserialize)]
struct Statistics {
    #[serde(default)]
    token_count: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortened_vectors_become_unit_vectors() {
        let mut vector = vec![3.0, 4.0];
        normalise(&mut vector);
        assert_eq!(vector, vec![0.6, 0.8]);
        let mut zero = vec![0.0, 0.0];
        normalise(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
    }

    #[test]
    fn batches_follow_each_apis_limit() {
        assert_eq!(batch(Flavor::Gemini, "gemini-embedding-001"), 100);
        assert_eq!(batch(Flavor::Vertex, "text-embedding-005"), 250);
        assert_eq!(batch(Flavor::Vertex, "gemini-embedding-001"), 1);
    }
}
