//! Gemini's and Vertex AI's errors: a `google.rpc.Status` (`{"error": {code, message, status,
//! details}}`), classified by HTTP status, canonical status name and, where the status alone is
//! ambiguous, the details and the message.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::provider::{CallError, ErrorClass};

/// `{"error": {...}}`.
#[derive(Debug, Deserialize)]
pub struct ErrorEnvelope {
    pub error: RpcStatus,
}

/// A `google.rpc.Status`.
#[derive(Debug, Default, Deserialize)]
pub struct RpcStatus {
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub details: Vec<Detail>,
}

/// One `details[]` entry; only the members classification reads.
#[derive(Debug, Default, Deserialize)]
pub struct Detail {
    #[serde(rename = "@type", default)]
    pub kind: String,
    /// `google.rpc.RetryInfo`.
    #[serde(rename = "retryDelay", default)]
    pub retry_delay: Option<String>,
    /// `google.rpc.ErrorInfo`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A non-2xx answer, classified.
pub fn classify(provider: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
    let rpc = parse(body).unwrap_or_default();
    classified(provider, status, headers, rpc)
}

/// An error object the provider sent inside a stream: its `code` stands for the status.
pub fn in_stream(provider: &str, rpc: RpcStatus) -> CallError {
    let status = rpc
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    classified(provider, status, &HeaderMap::new(), rpc)
}

fn classified(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    rpc: RpcStatus,
) -> CallError {
    let class = class(status, &rpc);
    let retry_after = rpc
        .details
        .iter()
        .filter(|d| d.kind.ends_with("google.rpc.RetryInfo"))
        .find_map(|d| d.retry_delay.as_deref().and_then(proto_duration));
    CallError::classified(class, headers, retry_after, rpc.message, provider)
}

/// The status object of an error body: `{"error": ...}`, or the `[{"error": ...}]` a stream
/// without `alt=sse` would carry.
pub fn parse(body: &[u8]) -> Option<RpcStatus> {
    if let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body) {
        return Some(envelope.error);
    }
    serde_json::from_slice::<Vec<ErrorEnvelope>>(body)
        .ok()?
        .into_iter()
        .next()
        .map(|e| e.error)
}

fn class(status: StatusCode, rpc: &RpcStatus) -> ErrorClass {
    let name = rpc.status.as_deref().unwrap_or_default();
    let reason = |wanted: &str| {
        rpc.details
            .iter()
            .any(|d| d.reason.as_deref() == Some(wanted))
    };
    match (status.as_u16(), name) {
        (429, _) | (_, "RESOURCE_EXHAUSTED") => ErrorClass::RateLimit,
        // A deadline exceeded is the same pressure as an overload (`providers.md` §6 lists 504
        // with 503): a 503 every client retries, maybe with another deployment.
        (503 | 504, _) | (_, "UNAVAILABLE" | "DEADLINE_EXCEEDED") => ErrorClass::Overloaded,
        (401 | 403, _) | (_, "UNAUTHENTICATED" | "PERMISSION_DENIED") => ErrorClass::Auth,
        // The Gemini API answers a wrong key with 400 INVALID_ARGUMENT and this reason.
        (400, _) if reason("API_KEY_INVALID") => ErrorClass::Auth,
        (404, _) | (_, "NOT_FOUND") => ErrorClass::NotFound,
        // Billing off, or the free tier unavailable in the region: the deployment's problem,
        // not the caller's, and another deployment may serve the request.
        (_, "FAILED_PRECONDITION") => ErrorClass::Upstream,
        (400, _) if is_context_length(rpc.message.as_deref().unwrap_or_default()) => {
            ErrorClass::ContextLength
        }
        (400..=499, _) => ErrorClass::InvalidRequest,
        _ => ErrorClass::Upstream,
    }
}

/// Gemini API: "The input token count (1200000) exceeds the maximum number of tokens allowed
/// (1048576)." Vertex: "... the input token count is 1200000 but model only supports up to
/// 1048576 ...".
fn is_context_length(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("input token count") || message.contains("maximum number of tokens")
}

/// A `google.protobuf.Duration` in JSON: seconds with an `s` suffix (`"37s"`, `"0.5s"`).
fn proto_duration(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_protobuf_durations() {
        assert_eq!(proto_duration("37s"), Some(Duration::from_secs(37)));
        assert_eq!(proto_duration("0.250s"), Some(Duration::from_millis(250)));
        assert_eq!(proto_duration("37"), None);
        assert_eq!(proto_duration("-1s"), None);
    }

    #[test]
    fn a_status_name_decides_when_the_http_status_does_not() {
        let rpc = |status: &str| RpcStatus {
            status: Some(status.to_owned()),
            ..RpcStatus::default()
        };
        let ok = StatusCode::OK;
        assert_eq!(class(ok, &rpc("RESOURCE_EXHAUSTED")), ErrorClass::RateLimit);
        assert_eq!(class(ok, &rpc("UNAVAILABLE")), ErrorClass::Overloaded);
        assert_eq!(class(ok, &rpc("PERMISSION_DENIED")), ErrorClass::Auth);
        assert_eq!(class(ok, &rpc("INTERNAL")), ErrorClass::Upstream);
        assert_eq!(
            class(StatusCode::BAD_REQUEST, &rpc("FAILED_PRECONDITION")),
            ErrorClass::Upstream
        );
        assert_eq!(
            class(StatusCode::GATEWAY_TIMEOUT, &rpc("DEADLINE_EXCEEDED")),
            ErrorClass::Overloaded
        );
        assert_eq!(class(ok, &rpc("DEADLINE_EXCEEDED")), ErrorClass::Overloaded);
        assert_eq!(
            class(StatusCode::GATEWAY_TIMEOUT, &RpcStatus::default()),
            ErrorClass::Overloaded
        );
    }
}
