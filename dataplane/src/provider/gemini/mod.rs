//! Google's Gemini models, on the Gemini API (`generativelanguage.googleapis.com`, an API key)
//! and on Vertex AI (a service account's OAuth token; see `google.rs`). Both speak the same
//! `generateContent` format, so one dialect serves both and only URLs and credentials differ.
//!
//! Choices made where the spec leaves room (`gemini.md`, `edge-cases.md`):
//! - tool-call ids carry Gemini's thought signatures back and forth (`tool_ids.rs`);
//! - a prompt Gemini blocks (no candidates, `promptFeedback.blockReason`) is a 400
//!   content-policy error; an answer stopped for safety is `finish_reason: content_filter`;
//! - schemas go unchanged as `parametersJsonSchema` / `responseJsonSchema`;
//! - the answer's `model` is the deployment's model, the same on complete and streamed answers;
//! - thought parts are never requested and are dropped if they come.

mod embeddings;
pub(super) mod error;
#[cfg(test)]
mod over_http;
mod request;
mod response;
mod stream;
mod tool_ids;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, Request, StatusCode};

use super::{
    CallError, Endpoint, HttpClient, Target,
    chat::ChatRequest,
    google::{Publisher, base_url, check_model_id},
    translated::{Dialect, StreamTranslator, Translated, malformed},
    transport,
};

const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// Most features are on `v1beta` (the SDK's default); a deployment's `apiVersion` may pick `v1`.
const GEMINI_API_VERSION: &str = "v1beta";

/// Where the Gemini models are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The Gemini API, with an API key.
    Gemini,
    /// Vertex AI's Google publisher, with a service account.
    Vertex,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::Vertex => "vertex",
        }
    }
}

pub struct Gemini(pub Flavor);

impl Dialect for Gemini {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        let deployment = target.deployment;
        let model = model_id(&deployment.model);
        let (method, body) = match target.endpoint {
            Endpoint::ChatCompletions => {
                let chat = ChatRequest::parse(target)?;
                let request = request::generate_content(&chat, self.0, target.stream)?;
                let body = serde_json::to_vec(&request).map_err(|e| malformed(self.name(), e))?;
                let method = if target.stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                };
                (method, body)
            }
            Endpoint::Embeddings => embeddings::request(self.0, target, model)?,
            Endpoint::ImageGenerations => return Err(no_images(self.name())),
        };
        let url = match self.0 {
            Flavor::Gemini => {
                check_model_id(self.name(), model)?;
                let version = deployment
                    .api_version
                    .as_deref()
                    .unwrap_or(GEMINI_API_VERSION);
                let base = base_url(
                    deployment.base_url.as_deref().unwrap_or(GEMINI_BASE_URL),
                    version,
                );
                format!("{base}/{version}/models/{model}:{method}")
            }
            Flavor::Vertex => {
                super::google::model_url(deployment, Publisher::Google, model, method)?
            }
        };
        let stream = target.stream && target.endpoint == Endpoint::ChatCompletions;
        transport::with_body(transport::json_post(&url, stream), Bytes::from(body))
    }

    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        match self.0 {
            Flavor::Gemini => Box::pin(async move {
                let name = HeaderName::from_static("x-goog-api-key");
                transport::api_key_header(target.deployment, request, name, "")
            }),
            Flavor::Vertex => super::google::authorize(target, http, request),
        }
    }

    fn response(
        &self,
        target: &Target<'_>,
        _headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Translated, CallError> {
        let body = &body[..];
        let model = model_id(&target.deployment.model);
        match target.endpoint {
            Endpoint::ChatCompletions => response::completion(self.name(), model, body),
            Endpoint::Embeddings => embeddings::response(self.0, target, model, body),
            Endpoint::ImageGenerations => Err(no_images(self.name())),
        }
    }

    fn embedding_batch(&self, target: &Target<'_>) -> Option<usize> {
        Some(embeddings::batch(
            self.0,
            model_id(&target.deployment.model),
        ))
    }

    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        Some(stream::translator(
            self.name(),
            model_id(&target.deployment.model),
        ))
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        error::classify(self.name(), status, headers, body)
    }
}

/// The model id as the URL wants it: `models/gemini-2.5-flash` and `gemini-2.5-flash` both work
/// in a deployment.
fn model_id(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

fn no_images(provider: &str) -> CallError {
    CallError::unsupported(format!(
        "image generation is not supported by provider {provider}"
    ))
}
