//! What the Messages and Responses front doors share: an answer put into the door's API, whether
//! it came in that API (passed on as it is), as a chat completion or a chat stream (translated),
//! or from the cache (a stored chat completion, replayed as a stream when one was asked for),
//! and refusals in the door's error shape.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::reframe::{AsIs, Reframe, stream_body};
use crate::{
    cache::replay,
    error::ApiError,
    finish::{Answer, AnswerBody, Rejected},
    server::{ResponseBody, full},
};

/// Chat SSE bytes in, the door's events out.
pub trait StreamTranslation: Default + Send + 'static {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>);
    /// The chat stream ended (normally after `[DONE]`, which already closed it).
    fn finish(&mut self, out: &mut Vec<u8>);
}

pub trait Door: Send + 'static {
    type Stream: StreamTranslation;
    /// The door's answer for a chat completion.
    fn complete(completion: &Value) -> Value;
    /// The event that ends a stream that failed after it began.
    fn error_event(error: &ApiError) -> Vec<u8>;
    /// The door's error body.
    fn error_body(error: &ApiError) -> Bytes;
}

pub fn respond<D: Door>(answer: Answer) -> Response<ResponseBody> {
    let Answer { headers, body } = answer;
    match body {
        AnswerBody::NativeComplete(body) => json_response(body, headers),
        AnswerBody::Complete(completion) => match serde_json::from_slice::<Value>(&completion) {
            Ok(completion) => {
                json_response(Bytes::from(D::complete(&completion).to_string()), headers)
            }
            Err(_) => error_response::<D>(&ApiError::internal(), headers),
        },
        AnswerBody::NativeStream(relay) => {
            event_stream(stream_body(relay, AsIs(D::error_event)), headers)
        }
        AnswerBody::Stream { relay, .. } => event_stream(
            stream_body(relay, Translate::<D>(D::Stream::default())),
            headers,
        ),
        AnswerBody::Replay { body, .. } => match replay::as_stream(&body, true) {
            Some(chat) => {
                let mut translation = D::Stream::default();
                let mut out = Vec::new();
                translation.feed(&chat, &mut out);
                translation.finish(&mut out);
                event_stream(full(out), headers)
            }
            None => error_response::<D>(&ApiError::internal(), headers),
        },
    }
}

pub fn rejection<D: Door>(rejected: Rejected) -> Response<ResponseBody> {
    error_response::<D>(&rejected.error, rejected.headers)
}

/// The door's error body with the error's status and the given headers.
pub fn error_response<D: Door>(error: &ApiError, headers: HeaderMap) -> Response<ResponseBody> {
    let mut response = json_response(D::error_body(error), headers);
    *response.status_mut() = error.status;
    if error.status == StatusCode::OK {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    response
}

/// A chat stream translated to the door's events as it is relayed.
struct Translate<D: Door>(D::Stream);

impl<D: Door> Reframe for Translate<D> {
    fn chunk(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.0.feed(bytes, &mut out);
        out
    }

    fn error(&mut self, error: &ApiError) -> Vec<u8> {
        D::error_event(error)
    }

    fn end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.0.finish(&mut out);
        out
    }
}

pub fn json_response(body: Bytes, headers: HeaderMap) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.headers_mut() = headers;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn event_stream(body: ResponseBody, headers: HeaderMap) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
