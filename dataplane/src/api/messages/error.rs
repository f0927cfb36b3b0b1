//! Errors in Anthropic's shape: `{"type":"error","error":{"type":...,"message":...}}` with
//! Anthropic's error type for the status, and modelgate's stable `code` beside it. The status
//! codes are the gateway's own, the same as on the OpenAI side (402, 429, 502, ...).

use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Anthropic's error type for a status.
fn kind(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

pub fn body_value(error: &ApiError) -> Value {
    let mut inner = json!({
        "type": kind(error.status.as_u16()),
        "message": error.message,
        "code": error.code,
    });
    if let Some(param) = &error.param {
        inner["param"] = json!(param);
    }
    json!({"type": "error", "error": inner})
}

pub fn body(error: &ApiError) -> Bytes {
    Bytes::from(body_value(error).to_string())
}
