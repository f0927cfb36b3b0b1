//! The front doors: each inbound API turns its HTTP requests into the pipeline's parsed request
//! and the pipeline's answer back into its own wire format. Every route is listed in [`ROUTES`]
//! with whether it needs a virtual key, so the auth requirement of each is explicit.

mod body;
mod door;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod goldens;
mod messages;
mod models;
mod openai;
mod reframe;
mod responses;
mod translate;

mod held;

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;
use tokio::sync::{Semaphore, watch};

pub use body::Intake;

use crate::{error::ApiError, pipeline::Services, request::Endpoint, server::ResponseBody};

/// What the front doors share: the pipeline's services and the intake limits.
pub struct Api {
    pub services: Services,
    pub intake: Intake,
    /// Requests in flight (streams until they end); past the cap a request is answered 503.
    pub in_flight: Arc<Semaphore>,
    /// Flips when the shutdown's grace is over: a request still waiting is answered 503.
    pub ended: watch::Receiver<bool>,
    /// Whether `GET /api/public/models` answers (without a key).
    pub public_catalog: bool,
}

/// Every public route: (method, path or prefix, needs a virtual key). Admin routes are not here;
/// they live on their own listener.
pub const ROUTES: &[(&str, &str, bool)] = &[
    ("POST", "/v1/chat/completions", true),
    ("POST", "/v1/embeddings", true),
    ("POST", "/v1/images/generations", true),
    ("POST", "/v1/messages", true),
    ("POST", "/v1/messages/count_tokens", true),
    ("POST", "/v1/responses", true),
    ("GET", "/v1/responses/{id}", true),
    ("DELETE", "/v1/responses/{id}", true),
    ("GET", "/v1/models", true),
    ("GET", "/v1/models/{model}", true),
    ("GET", "/api/public/models", false),
];

/// Serves one request within the in-flight cap; the slot is held until the answer's body (a
/// stream too) has ended.
pub async fn handle(api: Arc<Api>, request: Request<Incoming>) -> Response<ResponseBody> {
    let messages = request.uri().path().starts_with("/v1/messages");
    let refuse = |error: ApiError| {
        let mut response = if messages {
            messages::error_response(&error, http::HeaderMap::new())
        } else {
            openai::bare_error(&error)
        };
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    };
    let Ok(permit) = api.in_flight.clone().try_acquire_owned() else {
        return refuse(ApiError::overloaded());
    };
    let mut ended = api.ended.clone();
    let response = tokio::select! {
        response = route(api.clone(), request) => response,
        () = async { let _ = ended.wait_for(|ended| *ended).await; } => {
            return refuse(ApiError::shutting_down());
        }
    };
    held::holding(response, permit)
}

async fn route(api: Arc<Api>, request: Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    let endpoint = match path {
        "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
        "/v1/embeddings" => Some(Endpoint::Embeddings),
        "/v1/images/generations" => Some(Endpoint::ImageGenerations),
        _ => None,
    };
    if let Some(endpoint) = endpoint {
        if request.method() != Method::POST {
            return openai::bare_error(&ApiError::method_not_allowed());
        }
        return openai::handle(&api, endpoint, request).await;
    }
    if path == "/v1/messages" || path == "/v1/messages/count_tokens" {
        if request.method() != Method::POST {
            return messages::error_response(
                &ApiError::method_not_allowed(),
                http::HeaderMap::new(),
            );
        }
        return if path == "/v1/messages" {
            messages::handle(&api, request).await
        } else {
            messages::count_tokens(&api, request).await
        };
    }
    if path == "/v1/responses" || path.starts_with("/v1/responses/") {
        return responses::handle(&api, request).await;
    }
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        if request.method() != Method::GET {
            return openai::bare_error(&ApiError::method_not_allowed());
        }
        return models::handle(&api, &request);
    }
    if path == "/api/public/models" && api.public_catalog {
        if request.method() != Method::GET {
            return openai::bare_error(&ApiError::method_not_allowed());
        }
        return models::public(&api);
    }
    openai::bare_error(&ApiError::not_found_route())
}
