//! `/v1/embeddings` over InvokeModel (`/model/{id}/invoke`), in the model's own format. Amazon
//! Titan text embeddings take one text per call and Cohere Embed models (model ids naming
//! `cohere.embed`) up to 96: `batch_limit` tells the framework, which splits larger requests
//! into calls of that size and joins the answers.

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::super::{
    CallError, Target, Usage,
    chat::EmbeddingsRequest,
    output,
    translated::{Translated, malformed},
};
use super::NAME;

/// Most texts one Cohere call takes.
const COHERE_MAX_TEXTS: usize = 96;

/// Which request and response format a model id speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Titan,
    Cohere,
}

impl Family {
    /// Cohere for `cohere.embed-*` (also inside inference-profile ids and ARNs); Titan's format
    /// otherwise, which is also Amazon's for provisioned-throughput ARNs.
    fn of(model: &str) -> Self {
        if model.contains("cohere.embed") {
            Self::Cohere
        } else {
            Self::Titan
        }
    }
}

/// The most texts one call takes with `model`.
pub fn batch_limit(model: &str) -> usize {
    match Family::of(model) {
        Family::Titan => 1,
        Family::Cohere => COHERE_MAX_TEXTS,
    }
}

/// The header in which Bedrock reports an InvokeModel call's input tokens (Cohere's body has
/// no count).
const INPUT_TOKENS_HEADER: &str = "x-amzn-bedrock-input-token-count";

/// The InvokeModel body for `target`'s embeddings request.
pub fn request(target: &Target<'_>) -> Result<Vec<u8>, CallError> {
    let request = EmbeddingsRequest::parse(target, NAME)?;
    let texts = request.texts(NAME)?;
    let body = match Family::of(&target.deployment.model) {
        Family::Titan => {
            // The framework splits larger requests (`batch_limit`); more here is a bug upstream
            // of this function, refused rather than sent.
            let [text] = texts.as_slice() else {
                return Err(CallError::unsupported(format!(
                    "provider {NAME} embeds one input per call with Amazon Titan models"
                ))
                .with_param("input"));
            };
            // `normalize` is left at its default (true, as OpenAI's vectors are): Titan v1
            // refuses the member.
            serde_json::to_vec(&TitanRequest {
                input_text: text,
                dimensions: request.dimensions,
            })
        }
        Family::Cohere => {
            if texts.len() > COHERE_MAX_TEXTS {
                return Err(CallError::unsupported(format!(
                    "provider {NAME} embeds at most {COHERE_MAX_TEXTS} inputs per request with \
                     Cohere models (this request has {})",
                    texts.len()
                ))
                .with_param("input"));
            }
            if request.dimensions.is_some() {
                return Err(CallError::unsupported(format!(
                    "`dimensions` is not supported by provider {NAME} for Cohere embed models"
                ))
                .with_param("dimensions"));
            }
            serde_json::to_vec(&CohereRequest {
                texts: &texts,
                // Required by Cohere; a generic `/v1/embeddings` call embeds documents.
                input_type: "search_document",
            })
        }
    };
    body.map_err(|e| CallError::invalid_request(format!("the embeddings request: {e}")))
}

/// A complete InvokeModel answer as an OpenAI embeddings list.
pub fn response(
    target: &Target<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Translated, CallError> {
    let request = EmbeddingsRequest::parse(target, NAME)?;
    let expected = request.texts(NAME)?.len();
    let header_tokens = headers
        .get(INPUT_TOKENS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let model = &target.deployment.model;
    let (vectors, usage) = match Family::of(model) {
        Family::Titan => {
            let answer: TitanResponse = serde_json::from_slice(body)
                .map_err(|e| malformed(NAME, format!("the Titan embeddings answer: {e}")))?;
            let tokens = answer.input_text_token_count.or(header_tokens).unwrap_or(0);
            (vec![answer.embedding], input_usage(tokens))
        }
        Family::Cohere => {
            let answer: CohereResponse = serde_json::from_slice(body)
                .map_err(|e| malformed(NAME, format!("the Cohere embeddings answer: {e}")))?;
            let vectors = answer.embeddings.into_floats();
            if vectors.len() != expected {
                return Err(malformed(
                    NAME,
                    format!("{} embeddings for {expected} inputs", vectors.len()),
                ));
            }
            (vectors, input_usage(header_tokens.unwrap_or(0)))
        }
    };
    let body = output::embeddings(model, &vectors, request.wants_base64(), usage);
    Ok(Translated {
        body,
        usage: Some(usage),
    })
}

fn input_usage(tokens: u64) -> Usage {
    Usage {
        prompt_tokens: tokens,
        total_tokens: tokens,
        ..Usage::default()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanRequest<'a> {
    input_text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanResponse {
    embedding: Vec<f32>,
    #[serde(default)]
    input_text_token_count: Option<u64>,
}

#[derive(Serialize)]
struct CohereRequest<'a> {
    texts: &'a [&'a str],
    input_type: &'static str,
}

#[derive(Deserialize)]
struct CohereResponse {
    embeddings: CohereEmbeddings,
}

/// `embeddings_floats` (a list of vectors) or `embeddings_by_type` (`{"float": [...]}`).
#[derive(Deserialize)]
#[serde(untagged)]
enum CohereEmbeddings {
    Floats(Vec<Vec<f32>>),
    ByType { float: Vec<Vec<f32>> },
}

impl CohereEmbeddings {
    fn into_floats(self) -> Vec<Vec<f32>> {
        match self {
            Self::Floats(vectors) | Self::ByType { float: vectors } => vectors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_format_from_the_model_id() {
        for model in [
            "amazon.titan-embed-text-v2:0",
            "amazon.titan-embed-text-v1",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
        ] {
            assert_eq!(Family::of(model), Family::Titan, "{model}");
        }
        for model in [
            "cohere.embed-english-v3",
            "us.cohere.embed-v4:0",
            "arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-multilingual-v3",
        ] {
            assert_eq!(Family::of(model), Family::Cohere, "{model}");
        }
    }

    #[test]
    fn reads_both_cohere_answer_shapes() {
        let floats: CohereResponse = serde_json::from_str(
            r#"{"embeddings":[[0.5,1.0]],"response_type":"embeddings_floats"}"#,
        )
        .unwrap();
        assert_eq!(floats.embeddings.into_floats(), vec![vec![0.5, 1.0]]);
        let by_type: CohereResponse = serde_json::from_str(
            r#"{"embeddings":{"float":[[0.25],[2.0]]},"response_type":"embeddings_by_type"}"#,
        )
        .unwrap();
        assert_eq!(
            by_type.embeddings.into_floats(),
            vec![vec![0.25], vec![2.0]]
        );
    }
}
