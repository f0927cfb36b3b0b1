//! `/v1/embeddings` on Google: the Gemini API's `batchEmbedContents` (one request per text, no
//! token counts in the answer, so usage is reported as 0) and Vertex AI's `predict` (one
//! instance per text, token counts per prediction). `dimensions` becomes `outputDimensionality`.

use serde::{Deserialize, Serialize};

use super::Flavor;
use crate::provider::{
    CallError, Target, Usage,
    chat::EmbeddingsRequest,
    output,
    translated::{Translated, malformed},
};

/// The most texts one upstream call takes: `batchEmbedContents` takes 100 requests, Vertex's
/// `predict` 250 instances. The adapter makes one call per client request, so more is a 400.
fn max_inputs(flavor: Flavor) -> usize {
    match flavor {
        Flavor::Gemini => 100,
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
    if texts.len() > max_inputs(flavor) {
        return Err(CallError::invalid_request(format!(
            "provider {provider} embeds at most {} inputs per request",
            max_inputs(flavor)
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
    let vectors: Vec<Vec<f32>> = vectors;
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
