//! The OpenAI front door: chat completions, embeddings and image generation. It reads the
//! request into the pipeline's parsed form and puts what the pipeline answers back into
//! OpenAI's wire format: JSON bodies, SSE streams, and OpenAI's error body.

mod stream;

use http::{HeaderMap, HeaderValue, Request, Response, header};
use hyper::body::Incoming;

use super::{Api, body};
use crate::{
    auth,
    cache::replay,
    error::ApiError,
    finish::{Answer, AnswerBody, Rejected},
    pipeline,
    request::{Endpoint, Parsed},
    server::{ResponseBody, full},
};

pub async fn handle(
    api: &Api,
    endpoint: Endpoint,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let (parts, incoming) = request.into_parts();
    let intake = async {
        let bytes = body::read(incoming, &parts.headers, &api.intake).await?;
        Parsed::openai(endpoint, bytes, &parts.headers)
    };
    let credential = auth::bearer(&parts.headers);
    match pipeline::run(&api.services, endpoint, credential, intake).await {
        Ok(answer) => respond(answer),
        Err(rejected) => rejection(rejected),
    }
}

fn respond(answer: Answer) -> Response<ResponseBody> {
    let Answer { headers, body } = answer;
    let (body, content_type) = match body {
        AnswerBody::Complete(body) => (full(body), "application/json"),
        AnswerBody::Replay {
            body,
            client_wants_usage,
        } => match replay::as_stream(&body, client_wants_usage) {
            Some(events) => (full(events), "text/event-stream"),
            // Only chat completions are ever stored for streaming requests.
            None => return error_response(&ApiError::internal(), headers),
        },
        AnswerBody::Stream {
            relay,
            client_wants_usage,
            pricer,
        } => (
            stream::sse(relay, client_wants_usage, pricer),
            "text/event-stream",
        ),
        // Only a request in another API is ever answered in one.
        AnswerBody::NativeComplete(_) | AnswerBody::NativeStream(_) => {
            return error_response(&ApiError::internal(), headers);
        }
    };
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "text/event-stream" {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

fn rejection(rejected: Rejected) -> Response<ResponseBody> {
    error_response(&rejected.error, rejected.headers)
}

/// OpenAI's error body with the error's status and the given headers.
pub fn error_response(error: &ApiError, headers: HeaderMap) -> Response<ResponseBody> {
    let mut response = Response::new(full(error.body()));
    *response.status_mut() = error.status;
    *response.headers_mut() = headers;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error before any request id exists (no route, wrong method).
pub fn bare_error(error: &ApiError) -> Response<ResponseBody> {
    error_response(error, HeaderMap::new())
}
