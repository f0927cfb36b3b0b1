//! Errors from a provider call, as data: the executor reads `kind`, `status` and `retry_after`
//! and never matches message strings.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallErrorKind {
    /// The connection could not be opened (refused, DNS, TLS handshake).
    Connect,
    /// No response head, or no next chunk, within the time allowed.
    Timeout,
    /// The provider answered with a non-success status.
    Status,
    /// The answer broke mid-way or was not what the protocol promises.
    Protocol,
}

impl CallErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Status => "status",
            Self::Protocol => "protocol",
        }
    }
}

/// A failed call. `message` is safe to log and to show a client: it never holds credentials.
#[derive(Clone, Debug)]
pub struct CallError {
    pub kind: CallErrorKind,
    /// What kind of failure it is, decided where the error is made: the adapter that read the
    /// provider's answer knows, nobody after it has to guess from codes or messages.
    pub class: ErrorClass,
    pub status: Option<StatusCode>,
    pub retry_after: Option<Duration>,
    /// The provider's own error code, when it gave one (e.g. `context_length_exceeded`).
    pub provider_code: Option<String>,
    pub message: String,
    /// The request member a client error is about.
    pub param: Option<String>,
}

/// The longest pause a provider may ask for: a larger Retry-After (or reset time) is hostile or
/// broken, and would park a deployment for longer than any operator would want.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `provider_code` of a request an adapter cannot carry to its provider.
pub const UNSUPPORTED: &str = "unsupported_parameter";

/// What kind of failure an error is, across providers: what the executor and the client branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// 429: wait for `retry_after`, or try another deployment.
    RateLimit,
    /// The provider is shedding load (Anthropic 529, Gemini 503, Bedrock throttling of capacity).
    Overloaded,
    /// Our credential was refused: the deployment's config is wrong.
    Auth,
    /// Our provider account is out of credit or over its spend limit (OpenAI
    /// `insufficient_quota`, Anthropic `billing_error`, DeepSeek 402): waiting does not help, another
    /// deployment may.
    Quota,
    /// The request is too long for the model's context window.
    ContextLength,
    /// The provider's content policy refused the request.
    ContentPolicy,
    /// Anything else the caller got wrong, including parameters an adapter cannot carry.
    InvalidRequest,
    /// The model or deployment does not exist upstream.
    NotFound,
    /// A server-side failure, a timeout or a broken connection.
    Upstream,
}

impl ErrorClass {
    /// The class a status means when the provider says nothing more.
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            429 => Self::RateLimit,
            401 | 403 => Self::Auth,
            402 => Self::Quota,
            404 => Self::NotFound,
            503 | 529 => Self::Overloaded,
            400..=499 => Self::InvalidRequest,
            _ => Self::Upstream,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::Overloaded => "overloaded",
            Self::Auth => "auth",
            Self::Quota => "quota",
            Self::ContextLength => "context_length",
            Self::ContentPolicy => "content_policy",
            Self::InvalidRequest => "invalid_request",
            Self::NotFound => "not_found",
            Self::Upstream => "upstream",
        }
    }

    /// The status the gateway reports for the class, in OpenAI's vocabulary (an overloaded
    /// provider is a 503, which every OpenAI SDK retries).
    pub fn status(self) -> StatusCode {
        match self {
            Self::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Auth => StatusCode::UNAUTHORIZED,
            Self::Quota => StatusCode::PAYMENT_REQUIRED,
            Self::ContextLength | Self::ContentPolicy | Self::InvalidRequest => {
                StatusCode::BAD_REQUEST
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    /// The stable `code` an OpenAI-shaped body carries for the class, when it has one.
    pub fn code(self) -> Option<&'static str> {
        match self {
            Self::ContextLength => Some("context_length_exceeded"),
            Self::ContentPolicy => Some("content_policy_violation"),
            Self::RateLimit => Some("rate_limit_exceeded"),
            Self::Quota => Some("insufficient_quota"),
            _ => None,
        }
    }
}

impl CallError {
    pub fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            class: ErrorClass::Upstream,
            status: None,
            retry_after: None,
            provider_code: None,
            message: message.into(),
            param: None,
        }
    }

    /// A request the provider would refuse, caught before sending: a 400 with the message.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            kind: CallErrorKind::Status,
            class: ErrorClass::InvalidRequest,
            status: Some(StatusCode::BAD_REQUEST),
            retry_after: None,
            provider_code: None,
            message: message.into(),
            param: None,
        }
    }

    /// A request member the provider has no way to honour: a 400 `unsupported_parameter`.
    pub fn unsupported(message: impl Into<String>) -> Self {
        let mut error = Self::invalid_request(message);
        error.provider_code = Some(UNSUPPORTED.to_owned());
        error
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// A provider error, classified: the status becomes the class's OpenAI status, `code` the
    /// class's stable code (or the provider's own), and the provider's message is kept for the
    /// caller's own mistakes only (others, auth above all, may quote our credential).
    pub fn classified(
        class: ErrorClass,
        headers: &HeaderMap,
        retry_after: Option<Duration>,
        provider_message: Option<String>,
        provider: &str,
    ) -> Self {
        let status = class.status();
        let mut error = Self::status(
            status,
            headers,
            class.code().map(str::to_owned),
            format!("{provider} answered: {}", class.as_str().replace('_', " ")),
        );
        error.class = class;
        if retry_after.is_some() {
            error.retry_after = retry_after.map(|d| d.min(MAX_RETRY_AFTER));
        }
        if class == ErrorClass::Quota {
            // An account out of credit has no reset worth waiting for.
            error.retry_after = None;
        }
        if error.is_client_error()
            && let Some(message) = provider_message
        {
            error.message = message;
        }
        error
    }

    /// A failure the provider reported inside a 2xx answer (a stop reason or a stream event that
    /// means the call failed), described in the gateway's own words.
    pub fn generation_failed(class: ErrorClass, provider: &str, what: &str) -> Self {
        let mut error = Self::classified(class, &HeaderMap::new(), None, None, provider);
        error.message = format!("{provider}: {what}");
        error
    }

    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// With the class its adapter read from the provider's own code.
    pub fn with_class(mut self, class: ErrorClass) -> Self {
        self.class = class;
        self
    }

    /// The stable `code` a client sees when this error is its own mistake.
    pub fn client_code(&self) -> &'static str {
        match self.class {
            ErrorClass::ContextLength => "context_length_exceeded",
            ErrorClass::ContentPolicy => "content_policy_violation",
            _ if self.provider_code.as_deref() == Some(UNSUPPORTED) => UNSUPPORTED,
            _ => "invalid_request",
        }
    }

    /// A non-success answer, classed by its status alone; an adapter that knows better says so
    /// with [`Self::with_class`] or builds it with [`Self::classified`].
    pub fn status(
        status: StatusCode,
        headers: &HeaderMap,
        provider_code: Option<String>,
        message: String,
    ) -> Self {
        Self {
            kind: CallErrorKind::Status,
            class: ErrorClass::of_status(status),
            status: Some(status),
            retry_after: retry_after(headers)
                .or_else(|| {
                    (status == StatusCode::TOO_MANY_REQUESTS)
                        .then(|| rate_limit_reset(headers))
                        .flatten()
                })
                .map(|d| d.min(MAX_RETRY_AFTER)),
            provider_code,
            message,
            param: None,
        }
    }

    /// The caller's own mistake (bad request, context too long, content policy): returned to the
    /// client as is, never retried and never counted against the deployment.
    pub fn is_client_error(&self) -> bool {
        match self.status {
            Some(s) if self.kind == CallErrorKind::Status => {
                s.is_client_error()
                    && !matches!(
                        s,
                        // Our credential or the deployment's config is wrong, or the provider is
                        // shedding load: the next deployment may well succeed.
                        StatusCode::UNAUTHORIZED
                            | StatusCode::PAYMENT_REQUIRED
                            | StatusCode::FORBIDDEN
                            | StatusCode::NOT_FOUND
                            | StatusCode::REQUEST_TIMEOUT
                            | StatusCode::CONFLICT
                            | StatusCode::TOO_MANY_REQUESTS
                    )
            }
            _ => false,
        }
    }
}

/// A stream that ended before the provider's last event.
pub fn cut_short(provider: &str) -> CallError {
    CallError::new(
        CallErrorKind::Protocol,
        format!("{provider}: the stream ended before its last event"),
    )
}

/// A provider answer that is not what its API promises.
pub fn malformed(provider: &str, what: impl std::fmt::Display) -> CallError {
    CallError::new(CallErrorKind::Protocol, format!("{provider}: {what}"))
}

/// `retry-after-ms`, then `retry-after` in seconds (HTTP dates are ignored: a clock-skewed date is
/// worse than none).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    header("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// OpenAI-style reset headers (`x-ratelimit-reset-requests: 6m0s`, `...-tokens: 12ms`): when a
/// 429 names no Retry-After, the longer of the two says when the limit lifts.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok().and_then(go_duration))
        .max()
}

/// A Go duration string: `1h2m3.5s`, `250ms`, `40us`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_error(code: u16) -> CallError {
        CallError::status(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            None,
            String::new(),
        )
    }

    #[test]
    fn only_the_callers_own_mistakes_are_client_errors() {
        for code in [400, 413, 422] {
            assert!(status_error(code).is_client_error(), "{code}");
        }
        for code in [401, 403, 404, 408, 409, 429, 500, 502, 503, 529] {
            assert!(!status_error(code).is_client_error(), "{code}");
        }
        assert!(!CallError::new(CallErrorKind::Connect, "refused").is_client_error());
    }

    #[test]
    fn a_429_without_retry_after_uses_the_rate_limit_reset_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-reset-requests", "1m30s".parse().unwrap());
        headers.insert("x-ratelimit-reset-tokens", "250ms".parse().unwrap());
        let limited =
            CallError::status(StatusCode::TOO_MANY_REQUESTS, &headers, None, String::new());
        assert_eq!(limited.retry_after, Some(Duration::from_secs(90)));
        let server = CallError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &headers,
            None,
            String::new(),
        );
        assert_eq!(
            server.retry_after, None,
            "only a rate limit says when it lifts"
        );
        for (text, want) in [
            ("12ms", 0.012),
            ("6m0s", 360.0),
            ("1h2m3.5s", 3723.5),
            ("40us", 0.00004),
        ] {
            assert_eq!(
                go_duration(text),
                Duration::try_from_secs_f64(want).ok(),
                "{text}"
            );
        }
        for bad in ["", "5", "1d", "s", "1.2.3s"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_provider_cannot_ask_for_a_pause_longer_than_an_hour() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "1e19".parse().unwrap());
        let error = CallError::status(StatusCode::TOO_MANY_REQUESTS, &headers, None, String::new());
        assert_eq!(error.retry_after, Some(MAX_RETRY_AFTER));
        let classified = CallError::classified(
            ErrorClass::RateLimit,
            &HeaderMap::new(),
            Some(Duration::from_secs(u64::MAX / 4)),
            None,
            "p",
        );
        assert_eq!(classified.retry_after, Some(MAX_RETRY_AFTER));
        let quota = CallError::classified(
            ErrorClass::Quota,
            &headers,
            Some(Duration::from_secs(5)),
            None,
            "p",
        );
        assert_eq!(
            quota.retry_after, None,
            "waiting does not refill an account"
        );
        assert!(
            !quota.is_client_error(),
            "another deployment may have credit"
        );
        assert_eq!(quota.class(), ErrorClass::Quota);
    }

    #[test]
    fn reads_retry_after_in_seconds_and_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&date), None);
    }
}
