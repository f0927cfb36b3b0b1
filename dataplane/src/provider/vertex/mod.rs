//! Vertex AI: regional URLs, the service-account bearer token, and the publisher a model belongs
//! to. Google's own models (Gemini) speak the Gemini dialect; Claude (a model named `claude...`)
//! speaks Anthropic's Messages body through `rawPredict` (`claude.rs`). The deployment's
//! `api_key` holds the whole service-account key JSON, exchanged for access tokens by
//! `google_auth`; a token Vertex refuses with a 401 is dropped from the cache.

mod claude;

use crate::request::{Native, NativeApi};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, StatusCode};
use tokio::time::Instant;

use super::{
    CallError, HttpClient, Target, anthropic,
    gemini::{Flavor, Gemini},
    google::{Publisher, TOKENS, VERTEX as NAME, authorize},
    translated::{Dialect, StreamTranslator, Translated},
};

static GOOGLE: Gemini = Gemini(Flavor::Vertex);

/// Vertex AI, dispatching on the model's publisher.
pub struct Vertex;

impl Dialect for Vertex {
    fn name(&self) -> &'static str {
        NAME
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.request(target),
            Publisher::Anthropic => claude::request(target),
        }
    }

    /// A Messages client's request goes to Claude on Vertex as sent (see `claude::native_request`).
    fn native_request(
        &self,
        target: &Target<'_>,
        native: &Native,
    ) -> Option<Result<Request<Bytes>, CallError>> {
        (native.api == NativeApi::Messages
            && Publisher::of(&target.deployment.model) == Publisher::Anthropic)
            .then(|| claude::native_request(target, native))
    }

    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        authorize(target, http, request)
    }

    fn response(
        &self,
        target: &Target<'_>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Translated, CallError> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.response(target, headers, body),
            Publisher::Anthropic => claude::response(target, &body),
        }
    }

    fn embedding_batch(&self, target: &Target<'_>) -> Option<usize> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.embedding_batch(target),
            Publisher::Anthropic => None,
        }
    }

    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.stream(target),
            Publisher::Anthropic => Some(claude::stream(target)),
        }
    }

    /// Vertex's own front end answers in `google.rpc.Status` (quota, auth, unknown model); a
    /// Claude model's refusals keep Anthropic's `{"type": "error", ...}` body.
    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        if is_anthropic_error(body) {
            anthropic::error::error(status, headers, body, NAME)
        } else {
            GOOGLE.error(status, headers, body)
        }
    }

    /// A 401 means the token was refused (revoked, or its account disabled): the next request
    /// fetches a new one rather than sending this one for the rest of its hour.
    fn refused(&self, target: &Target<'_>, status: StatusCode, authorized_at: Instant) {
        if status == StatusCode::UNAUTHORIZED
            && let Some(key) = &target.deployment.api_key
        {
            TOKENS.evict(key.expose(), authorized_at);
        }
    }
}

fn is_anthropic_error(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Tagged>(body).is_ok_and(|t| t.kind == "error")
}
