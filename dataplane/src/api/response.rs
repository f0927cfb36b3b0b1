//! Response bodies and builders shared by the handlers.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

use crate::error::ApiError;

/// Every response body: complete or streamed, never failing (stream failures become an error
/// event inside the stream).
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).boxed_unsync()
}

pub const REQUEST_ID: &str = "x-modelgate-request-id";

/// The OpenAI error body with the error's status.
pub fn error_response(error: &ApiError, request_id: Option<&str>) -> Response<ResponseBody> {
    let mut response = Response::new(full(error.body()));
    *response.status_mut() = error.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}
