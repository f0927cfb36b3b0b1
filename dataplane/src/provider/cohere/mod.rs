//! Cohere's v2 API: `POST /v2/chat` (SSE with named events when streaming) and `POST /v2/embed`,
//! with a Bearer key.
//!
//! Choices made where the APIs differ (the rest is in each translation's own file):
//! - usage is `usage.tokens` (what the model read and wrote, OpenAI's meaning), falling back to
//!   `billed_units` when a response has no `tokens`; `cached_tokens` is the cached part of it;
//! - Cohere sends no `model` and no `created`: answers carry the deployment's model id and the
//!   gateway's clock, and a `chatcmpl-` id of the gateway's own;
//! - thinking blocks and the `tool_plan` (Cohere's own narration before tool calls) are not part
//!   of OpenAI's answer and are left out, as are citations.

mod embed;
mod error;
mod request;
mod response;
mod stream;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, StatusCode, header};

use super::{
    CallError, Endpoint, HttpClient, Target,
    translated::{Dialect, SseStream, StreamTranslator, Translated, malformed},
    transport,
};

const NAME: &str = "cohere";
const BASE_URL: &str = "https://api.cohere.com";

pub struct Cohere;

impl Dialect for Cohere {
    fn name(&self) -> &'static str {
        NAME
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        let (path, body) = match target.endpoint {
            Endpoint::ChatCompletions => ("/v2/chat", request::chat(target)?),
            Endpoint::Embeddings => ("/v2/embed", embed::request(target)?),
            Endpoint::ImageGenerations => {
                return Err(CallError::unsupported(format!(
                    "image generation is not supported by provider {NAME}"
                )));
            }
        };
        let base = target
            .deployment
            .base_url
            .as_deref()
            .unwrap_or(BASE_URL)
            .trim_end_matches('/');
        transport::with_body(
            transport::json_post(&format!("{base}{path}"), target.stream),
            body,
        )
    }

    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        _http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            transport::api_key_header(target.deployment, request, header::AUTHORIZATION, "Bearer ")
        })
    }

    fn response(
        &self,
        target: &Target<'_>,
        _headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Translated, CallError> {
        let body = &body[..];
        match target.endpoint {
            Endpoint::ChatCompletions => response::completion(&target.deployment.model, body),
            Endpoint::Embeddings => embed::response(target, body),
            Endpoint::ImageGenerations => Err(malformed(NAME, "an answer to an unsent request")),
        }
    }

    fn embedding_batch(&self, _target: &Target<'_>) -> Option<usize> {
        Some(embed::MAX_TEXTS)
    }

    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        Some(Box::new(SseStream::new(
            stream::Events::default(),
            &target.deployment.model,
            NAME,
        )))
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        error::classify(status, headers, body)
    }
}
