//! Cohere's error answers (`{"id","message"}`, some endpoints only `message`), classified.
//!
//! | Status | Class |
//! | --- | --- |
//! | 400, 422 | context length when the message says so ("too many tokens"), content policy for a blocked input or output, else invalid request |
//! | 401, 403 | auth |
//! | 404 | not found |
//! | 429 | rate limit (reset time from `retry-after` when sent) |
//! | 498 (a deny-listed token in the request or answer) | content policy, a 400 |
//! | 499 (cancelled) | upstream: the gateway never cancels with an answer pending, so Cohere cut it |
//! | 501 (feature not implemented) | invalid request: the request asked for it |
//! | 503 | overloaded |
//! | 500, 504, others | upstream |

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{
    super::{CallError, ErrorClass},
    NAME,
};

#[derive(Deserialize, Default)]
struct Body {
    #[serde(default)]
    message: Option<String>,
}

pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
    let message = serde_json::from_slice::<Body>(body)
        .unwrap_or_default()
        .message;
    let says = |words: &[&str]| {
        message.as_deref().is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            words.iter().any(|w| m.contains(w))
        })
    };
    let class = match status.as_u16() {
        400 | 422 if says(&["too many tokens", "context length", "context window"]) => {
            ErrorClass::ContextLength
        }
        400 | 422 if says(&["blocked input", "blocked output", "usage guidelines"]) => {
            ErrorClass::ContentPolicy
        }
        498 => ErrorClass::ContentPolicy,
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        429 => ErrorClass::RateLimit,
        503 => ErrorClass::Overloaded,
        499 => ErrorClass::Upstream,
        501 => ErrorClass::InvalidRequest,
        400..=499 => ErrorClass::InvalidRequest,
        _ => ErrorClass::Upstream,
    };
    CallError::classified(class, headers, None, message, NAME)
}
