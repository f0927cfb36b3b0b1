//! The OpenAI-compatible surface: routes each request to its handler. Every route is listed in
//! [`ROUTES`] with whether it needs a virtual key, so the auth requirement of each is explicit.

mod cached;
mod inference;
mod models;
mod request;
mod response;
mod spend;
mod stream;

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::{
    cache::Cache,
    config::ConfigHandle,
    error::ApiError,
    limits::Limiter,
    provider::{Endpoint, HttpClients},
    resilience::{Breakers, RetryBudget},
    telemetry::{DecisionLog, Metrics},
};

pub use request::{EXTENSION_FIELD, JsonRequest};
pub use response::{ResponseBody, error_response, full};

/// What a request handler shares.
pub struct AppState {
    pub config: ConfigHandle,
    /// Budgets and rate limits.
    pub limiter: Limiter,
    /// The response cache.
    pub cache: Arc<Cache>,
    pub http: HttpClients,
    pub metrics: Arc<Metrics>,
    pub decisions: DecisionLog,
    pub max_body_bytes: usize,
    /// Circuit breakers per (org, deployment); they outlive config swaps.
    pub breakers: Breakers,
    pub retry_budget: RetryBudget,
}

/// Every public route: (method, path or prefix, needs a virtual key). Admin routes are not here;
/// they live on their own listener.
pub const ROUTES: &[(&str, &str, bool)] = &[
    ("POST", "/v1/chat/completions", true),
    ("POST", "/v1/embeddings", true),
    ("POST", "/v1/images/generations", true),
    ("GET", "/v1/models", true),
    ("GET", "/v1/models/{model}", true),
];

pub async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    let endpoint = match path {
        "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
        "/v1/embeddings" => Some(Endpoint::Embeddings),
        "/v1/images/generations" => Some(Endpoint::ImageGenerations),
        _ => None,
    };
    if let Some(endpoint) = endpoint {
        if request.method() != Method::POST {
            return error_response(&ApiError::method_not_allowed(), None);
        }
        return inference::handle(&state, endpoint, request).await;
    }
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        if request.method() != Method::GET {
            return error_response(&ApiError::method_not_allowed(), None);
        }
        return models::handle(&state, &request);
    }
    error_response(&ApiError::not_found_route(), None)
}
