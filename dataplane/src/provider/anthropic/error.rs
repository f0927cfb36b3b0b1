//! Anthropic's errors (`{"type":"error","error":{"type","message"}}`), classified: by the error
//! type when the body has one, by the status otherwise (a proxy's HTML page has none), following
//! the status table of `anthropic.md` §5 and the statuses Anthropic's SDK retries (408, 409).

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::provider::{CallError, ErrorClass};

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    error_code: Option<String>,
}

/// The `error.details.error_code` of a 429 that no wait lifts: the organisation's spend limit.
const SPEND_LIMIT: &str = "enforced_spend_limit_reached";

/// A non-2xx answer, classified, with the time a rate limit lifts.
pub(in crate::provider) fn error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    provider: &str,
) -> CallError {
    let (kind, message, code) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => (
            envelope.error.kind,
            envelope.error.message,
            envelope.error.details.and_then(|d| d.error_code),
        ),
        Err(_) => (None, None, None),
    };
    let class = if code.as_deref() == Some(SPEND_LIMIT) {
        ErrorClass::Quota
    } else {
        classify(kind.as_deref(), message.as_deref(), Some(status))
    };
    // `retry-after` (read by `classified`) says it best; the reset times are the fallback.
    let has_retry_after =
        headers.contains_key("retry-after") || headers.contains_key("retry-after-ms");
    let reset = (class == ErrorClass::RateLimit && !has_retry_after)
        .then(|| rate_limit_reset(headers, jiff::Timestamp::now()))
        .flatten();
    CallError::classified(class, headers, reset, message, provider)
}

/// An `error` event in the middle of a stream (what would have been the status of a
/// non-streamed call, e.g. `overloaded_error` for a 529).
pub(in crate::provider) fn stream_error(kind: &str, message: &str, provider: &str) -> CallError {
    let class = classify(Some(kind), Some(message), None);
    CallError::classified(
        class,
        &HeaderMap::new(),
        None,
        Some(message.to_owned()),
        provider,
    )
}

fn classify(kind: Option<&str>, message: Option<&str>, status: Option<StatusCode>) -> ErrorClass {
    match kind {
        Some("invalid_request_error") => invalid_request(message),
        Some("authentication_error" | "permission_error") => ErrorClass::Auth,
        Some("not_found_error") => ErrorClass::NotFound,
        Some("request_too_large") => ErrorClass::InvalidRequest,
        Some("rate_limit_error") => ErrorClass::RateLimit,
        // Out of credit: waiting does not help, another deployment may have some.
        Some("billing_error") => ErrorClass::Quota,
        Some("overloaded_error") => ErrorClass::Overloaded,
        Some("api_error" | "timeout_error") => ErrorClass::Upstream,
        _ => match status.map(|s| s.as_u16()) {
            Some(401 | 403) => ErrorClass::Auth,
            Some(402) => ErrorClass::Quota,
            Some(404) => ErrorClass::NotFound,
            // A timeout or a conflict is Anthropic's side (its SDK retries both), not the
            // caller's request.
            Some(408 | 409) => ErrorClass::Upstream,
            Some(429) => ErrorClass::RateLimit,
            Some(503 | 529) => ErrorClass::Overloaded,
            // 413 `request_too_large` and the rest: the request itself.
            Some(400..=499) => invalid_request(message),
            _ => ErrorClass::Upstream,
        },
    }
}

/// Anthropic says "invalid request" for a prompt too long for the model and for output its
/// content filter blocked; only the message tells them apart.
fn invalid_request(message: Option<&str>) -> ErrorClass {
    let message = message.unwrap_or_default().to_ascii_lowercase();
    if message.contains("prompt is too long") || message.contains("exceed context limit") {
        ErrorClass::ContextLength
    } else if message.contains("content filtering policy") {
        ErrorClass::ContentPolicy
    } else {
        ErrorClass::InvalidRequest
    }
}

/// Each limit Anthropic enforces: its reset time (RFC 3339) and what is left of it.
const LIMITS: &[(&str, &str)] = &[
    (
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-requests-remaining",
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
    ),
];

/// How long until the limit that was hit resets: the latest reset among the exhausted limits,
/// or among all of them when none says it is exhausted.
fn rate_limit_reset(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let resets: Vec<(bool, Duration)> = LIMITS
        .iter()
        .filter_map(|(reset, remaining)| {
            let at: jiff::Timestamp = header(reset)?.trim().parse().ok()?;
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
            let exhausted = header(remaining).and_then(|r| r.trim().parse::<u64>().ok()) == Some(0);
            Some((exhausted, wait))
        })
        .collect();
    let any_exhausted = resets.iter().any(|(exhausted, _)| *exhausted);
    resets
        .into_iter()
        .filter(|(exhausted, _)| *exhausted || !any_exhausted)
        .map(|(_, wait)| wait)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn body(kind: &str, message: &str) -> Vec<u8> {
        serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_limit_that_ran_out_says_when_to_retry() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let limited = headers(&[
            ("anthropic-ratelimit-requests-remaining", "12"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:01:00Z"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:07.5Z"),
        ]);
        assert_eq!(
            rate_limit_reset(&limited, now),
            Some(Duration::from_millis(7500))
        );
        let unknown = headers(&[
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:03Z"),
            ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:09Z"),
        ]);
        assert_eq!(
            rate_limit_reset(&unknown, now),
            Some(Duration::from_secs(9))
        );
        let past = headers(&[("anthropic-ratelimit-tokens-reset", "2025-12-31T23:59:00Z")]);
        assert_eq!(rate_limit_reset(&past, now), Some(Duration::ZERO));
        assert_eq!(rate_limit_reset(&headers(&[]), now), None);
    }

    #[test]
    fn retry_after_wins_over_the_reset_times() {
        let both = headers(&[
            ("retry-after", "4"),
            ("anthropic-ratelimit-tokens-reset", "2999-01-01T00:00:00Z"),
        ]);
        let error = error(
            StatusCode::TOO_MANY_REQUESTS,
            &both,
            &body("rate_limit_error", "slow down"),
            "anthropic",
        );
        assert_eq!(error.class(), ErrorClass::RateLimit);
        assert_eq!(error.retry_after, Some(Duration::from_secs(4)));
    }

    #[test]
    fn error_types_and_messages_decide_the_class() {
        let cases = [
            (
                400,
                "invalid_request_error",
                "prompt is too long: 215000 tokens > 200000 maximum",
                ErrorClass::ContextLength,
            ),
            (
                400,
                "invalid_request_error",
                "Output blocked by content filtering policy",
                ErrorClass::ContentPolicy,
            ),
            (
                400,
                "invalid_request_error",
                "max_tokens: Field required",
                ErrorClass::InvalidRequest,
            ),
            (
                401,
                "authentication_error",
                "invalid x-api-key",
                ErrorClass::Auth,
            ),
            (403, "permission_error", "no access", ErrorClass::Auth),
            (
                404,
                "not_found_error",
                "model: claude-x",
                ErrorClass::NotFound,
            ),
            (
                413,
                "request_too_large",
                "too large",
                ErrorClass::InvalidRequest,
            ),
            (
                402,
                "billing_error",
                "credit balance too low",
                ErrorClass::Quota,
            ),
            (
                500,
                "api_error",
                "Internal server error",
                ErrorClass::Upstream,
            ),
            (504, "timeout_error", "timed out", ErrorClass::Upstream),
            (
                529,
                "overloaded_error",
                "Overloaded",
                ErrorClass::Overloaded,
            ),
        ];
        for (status, kind, message, want) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            let got = error(status, &HeaderMap::new(), &body(kind, message), "anthropic");
            assert_eq!(got.class(), want, "{kind}: {message}");
        }
        let proxy_page = error(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>",
            "anthropic",
        );
        assert_eq!(proxy_page.class(), ErrorClass::Upstream);
        let billing = stream_error("billing_error", "credit balance too low", "anthropic");
        assert_eq!(billing.class(), ErrorClass::Quota);
        let mid_stream = stream_error("overloaded_error", "Overloaded", "anthropic");
        assert_eq!(mid_stream.status, Some(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[test]
    fn a_status_without_an_error_type_is_classified_by_anthropics_table() {
        for (status, want) in [
            (402, ErrorClass::Quota),
            (408, ErrorClass::Upstream),
            (409, ErrorClass::Upstream),
            (413, ErrorClass::InvalidRequest),
            (429, ErrorClass::RateLimit),
            (504, ErrorClass::Upstream),
            (529, ErrorClass::Overloaded),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let got = error(
                status,
                &HeaderMap::new(),
                b"upstream timed out",
                "anthropic",
            );
            assert_eq!(got.class(), want, "{status}");
        }
        let timeout = error(
            StatusCode::REQUEST_TIMEOUT,
            &HeaderMap::new(),
            b"",
            "anthropic",
        );
        assert!(!timeout.is_client_error(), "a timeout is tried again");
    }

    #[test]
    fn a_spend_limit_is_out_of_quota_not_a_rate_limit() {
        let spend = serde_json::json!({"type": "error", "error": {"type": "rate_limit_error",
            "message": "spend limit reached", "details": {"error_code": "enforced_spend_limit_reached"}}});
        let headers = headers(&[("retry-after", "30")]);
        let got = error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            spend.to_string().as_bytes(),
            "anthropic",
        );
        assert_eq!(got.class(), ErrorClass::Quota);
        assert_eq!(got.retry_after, None, "no wait refills the budget");
        let ordinary = error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            &body("rate_limit_error", "slow down"),
            "anthropic",
        );
        assert_eq!(ordinary.class(), ErrorClass::RateLimit);
    }

    #[test]
    fn only_the_callers_own_mistakes_keep_the_providers_message() {
        let secret = "invalid x-api-key sk-ant-secret";
        let auth = error(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            &body("authentication_error", secret),
            "anthropic",
        );
        assert!(!auth.message.contains("sk-ant"), "{}", auth.message);
        let bad = error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            &body(
                "invalid_request_error",
                "messages: at least one message is required",
            ),
            "anthropic",
        );
        assert_eq!(bad.message, "messages: at least one message is required");
    }
}
