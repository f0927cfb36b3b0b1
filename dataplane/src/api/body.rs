//! Reading a request body within the size limit and the time limit.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::error::ApiError;

/// How much of a body the front doors take, and how long they wait for it.
#[derive(Clone, Copy, Debug)]
pub struct Intake {
    pub max_body_bytes: usize,
    /// A body still arriving after this is refused (408): a client trickling it holds no
    /// request slot for longer.
    pub body_read: Duration,
}

/// The body within `intake`'s limits.
pub async fn read(body: Incoming, headers: &HeaderMap, intake: &Intake) -> Result<Bytes, ApiError> {
    tokio::time::timeout(
        intake.body_read,
        read_within(body, headers, intake.max_body_bytes),
    )
    .await
    .unwrap_or_else(|_| Err(ApiError::request_timeout(intake.body_read)))
}

/// The body, refusing more than `limit` bytes (by Content-Length before reading, and while
/// reading for chunked bodies).
async fn read_within(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::body_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::body_too_large(limit))
        }
        Err(e) => Err(ApiError::invalid_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}
