//! Anthropic's Messages API (`POST /v1/messages`). The translations are split by direction and
//! kept free of transport, so Claude on Vertex AI (`:rawPredict`) and on Bedrock InvokeModel,
//! which carry the same body in another envelope, reuse them:
//! - `request::messages_body` builds the request body from the client's chat request
//!   (`request::Envelope` says whether `model`, `anthropic_version` and `stream` are members);
//! - `response::completion` translates a complete `Message` answer;
//! - `stream::MessagesStream` is the `EventHandler` for the streamed events;
//! - `error::error` classifies an error answer (`error::stream_error` an `error` event).
//!
//! Choices made where OpenAI and Anthropic differ (see each function for why):
//! - `max_tokens` is required by Anthropic; without one from the client `request::DEFAULT_MAX_TOKENS`.
//! - `temperature` above 1 (OpenAI allows up to 2) is a 400, never clamped or rescaled.
//! - JSON mode (`response_format`) is a forced tool whose input is the answer (`json_mode`).
//! - Part-level `cache_control` (prompt caching) goes onto the matching text and image blocks.
//! - The answer's `model` is the deployment's model, streamed or not: the name the gateway
//!   routed by, the same on both paths, rather than the dated version Anthropic reports.

pub(super) mod error;
pub(super) mod json_mode;
pub(super) mod request;
pub(super) mod response;
#[cfg(test)]
mod round_trip;
pub(super) mod stream;
mod turns;
mod wire;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use modelgate_crds::compiled::CompiledDeployment;

use crate::request::{Native, NativeApi};

use super::{
    CallError, Endpoint, HttpClient, Target,
    chat::ChatRequest,
    translated::{Dialect, SseStream, StreamTranslator, Translated},
    transport,
};

use error::error;
use request::{Envelope, messages_body};
use response::completion;
use stream::MessagesStream;

const NAME: &str = "anthropic";
const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version this translation speaks (still the current one).
const API_VERSION: &str = "2023-06-01";
const VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");
const KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");
const BETA_HEADER: HeaderName = HeaderName::from_static("anthropic-beta");

/// Anthropic's own API.
pub struct Anthropic;

impl Dialect for Anthropic {
    fn name(&self) -> &'static str {
        NAME
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        if target.endpoint != Endpoint::ChatCompletions {
            return Err(no_such_api(target.endpoint));
        }
        let chat = ChatRequest::parse(target)?;
        let envelope = Envelope {
            model: Some(&target.deployment.model),
            anthropic_version: None,
            stream: target.stream,
        };
        let body = messages_body(&chat, envelope, NAME)?;
        transport::with_body(
            transport::json_post(&url(target.deployment), target.stream)
                .header(VERSION_HEADER, HeaderValue::from_static(API_VERSION)),
            body,
        )
    }

    /// A Messages client's request goes through as sent, with the deployment's model and the
    /// client's `anthropic-version` and `anthropic-beta` (the features it asked for are the
    /// client's business, and a rejected beta flag is the provider's answer to give).
    fn native_request(
        &self,
        target: &Target<'_>,
        native: &Native,
    ) -> Option<Result<Request<Bytes>, CallError>> {
        if native.api != NativeApi::Messages {
            return None;
        }
        let mut builder = transport::json_post(&url(target.deployment), target.stream);
        let version = native
            .headers
            .get(VERSION_HEADER)
            .cloned()
            .unwrap_or(HeaderValue::from_static(API_VERSION));
        builder = builder.header(VERSION_HEADER, version);
        for beta in native.headers.get_all(BETA_HEADER) {
            builder = builder.header(BETA_HEADER, beta.clone());
        }
        Some(transport::with_body(
            builder,
            native.body.with_model(&target.deployment.model),
        ))
    }

    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        _http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(
            async move { transport::api_key_header(target.deployment, request, KEY_HEADER, "") },
        )
    }

    fn response(
        &self,
        target: &Target<'_>,
        _headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Translated, CallError> {
        let json_mode = json_mode::requested(target);
        completion(&body, &target.deployment.model, json_mode, NAME)
    }

    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        Some(Box::new(SseStream::new(
            MessagesStream::new(NAME, json_mode::requested(target)),
            &target.deployment.model,
            NAME,
        )))
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        error(status, headers, body, NAME)
    }
}

/// `{base}/v1/messages`. The deployment's `baseUrl` replaces the origin; a trailing `/v1` is
/// tolerated, since OpenAI-style base URLs end in it.
fn url(deployment: &CompiledDeployment) -> String {
    let base = deployment
        .base_url
        .as_deref()
        .unwrap_or(DEFAULT_BASE_URL)
        .trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/messages")
}

/// Anthropic serves chat only: embeddings and images are a 400 naming the missing API.
fn no_such_api(endpoint: Endpoint) -> CallError {
    let api = match endpoint {
        Endpoint::Embeddings => "embeddings",
        Endpoint::ImageGenerations => "image generation",
        Endpoint::ChatCompletions => "chat",
    };
    CallError::unsupported(format!("provider {NAME} has no {api} API")).with_param("model")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(base_url: Option<&str>) -> CompiledDeployment {
        serde_json::from_value(serde_json::json!({
            "id": "ns/group/d", "name": "d", "provider": "anthropic", "model": "claude",
            "baseUrl": base_url, "weight": 1, "tags": [], "timeouts": {},
        }))
        .unwrap()
    }

    #[test]
    fn the_base_url_replaces_the_origin_with_or_without_v1() {
        assert_eq!(
            url(&deployment(None)),
            "https://api.anthropic.com/v1/messages"
        );
        for base in [
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9000/",
            "http://127.0.0.1:9000/v1",
            "http://127.0.0.1:9000/v1/",
        ] {
            assert_eq!(
                url(&deployment(Some(base))),
                "http://127.0.0.1:9000/v1/messages",
                "{base}"
            );
        }
    }
}
