//! Client-facing errors: the only place an error becomes an HTTP response. Every error is the
//! OpenAI error body with a stable `code`; messages never carry keys or upstream secrets.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

/// Which per-minute rate a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateKind {
    Requests,
    Tokens,
}

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI `type`: invalid_request_error, authentication_error, permission_error, ...
    pub kind: &'static str,
    /// Stable machine-readable code; also the bounded metric label.
    pub code: &'static str,
    pub message: String,
    pub param: Option<Cow<'static, str>>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "Missing API key: send it as `Authorization: Bearer <key>` (or `x-api-key: <key>` on the Messages API).",
        )
    }

    pub fn unknown_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        )
    }

    pub fn expired_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "key_expired",
            "This API key has expired.",
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model `{}` does not exist or you do not have access to it.",
                printable(model)
            ),
        )
        .with_param("model")
    }

    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "model_not_allowed",
            format!(
                "This API key is not allowed to use the model `{}`.",
                printable(model)
            ),
        )
        .with_param("model")
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            format!("The request body is not valid JSON: {detail}"),
        )
    }

    pub fn request_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!(
                "The request body did not arrive within {} s.",
                limit.as_secs()
            ),
        )
    }

    /// More requests in flight than this gateway takes: try again in a moment.
    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "gateway_overloaded",
            "The gateway is at its limit of requests in flight; retry shortly.",
        )
    }

    /// The gateway is shutting down and its grace for this request is over.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "gateway_shutting_down",
            "The gateway is shutting down; retry the request.",
        )
    }

    pub fn duplicate_field(key: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "duplicate_field",
            format!("`{key}` is given more than once in the request body."),
        )
        .with_param(key.to_owned())
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn not_found_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_route",
            "Unknown API route.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "This route does not accept that HTTP method.",
        )
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "config_not_loaded",
            "The gateway has not loaded a valid configuration yet.",
        )
    }

    pub fn all_deployments_failed(attempts: usize) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "all_deployments_failed",
            format!(
                "Every deployment in the routing plan failed ({attempts} attempts); see x-modelgate-fallback-chain."
            ),
        )
    }

    pub fn no_deployments() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "no_deployments_available",
            "No deployment of this model can be served by this gateway.",
        )
    }

    /// A client error the provider reported (bad request, context too long, ...), passed back.
    pub fn upstream_client_error(
        status: StatusCode,
        code: &'static str,
        message: String,
        param: Option<String>,
    ) -> Self {
        let mut error = Self::new(status, "invalid_request_error", code, message);
        error.param = param.map(Cow::Owned);
        error
    }

    pub fn override_not_allowed(param: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "override_not_allowed",
            format!("The caller's RoutingPolicy does not allow overriding `{param}` per request."),
        )
        .with_param(param)
    }

    /// A spend tag that is malformed, or that the caller's RoutingPolicy does not allow.
    pub fn invalid_spend_tag(message: String, param: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_spend_tag",
            format!("Spend tags: {message}."),
        )
        .with_param(param)
    }

    pub fn invalid_strategy(value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_strategy",
            format!(
                "Unknown strategy `{}`; use simple-shuffle, least-busy, usage-based, latency-based or cost-based.",
                printable(value)
            ),
        )
        .with_param("x-modelgate-strategy")
    }

    pub fn unpriced_deployment() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "unpriced_deployment",
            "Every deployment of this model is unpriced, and a key with a budget may only call \
             priced ones (a RoutingPolicy may set allowUnpriced).",
        )
    }

    pub fn deployments_at_capacity() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "deployments_at_capacity",
            "Every deployment of this model is at its declared requests or tokens per minute.",
        )
    }

    /// No link of the plan has a context window for the request, and it has no wider links.
    pub fn context_window_exceeded(tokens: u64) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "context_length_exceeded",
            format!(
                "This request needs about {tokens} tokens (prompt estimate plus max_tokens), more \
                 than the context window of any deployment of this model."
            ),
        )
        .with_param("messages")
    }

    pub fn no_deployment_matches_tags(tags: &[String]) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "no_deployment_matches_tags",
            format!(
                "No deployment of this model has all of the capabilities [{}].",
                tags.join(", ")
            ),
        )
        .with_param("modelgate.tags")
    }

    /// A budget that applies to the caller has no room for this call's worst-case cost.
    pub fn budget_exceeded(scope: &str, limit_usd: f64, period: &str) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            "budget_exceeded",
            format!(
                "The {scope} budget ({limit_usd} USD, {period}) has no room for this request's \
                 worst-case cost. Lower max_tokens, or wait for the budget to reset."
            ),
        )
    }

    /// A request or token rate limit that applies to the caller is reached for this minute.
    pub fn rate_limited(scope: &str, kind: RateKind, limit: u64) -> Self {
        let (code, unit) = match kind {
            RateKind::Requests => ("rpm_limit_exceeded", "requests"),
            RateKind::Tokens => ("tpm_limit_exceeded", "tokens"),
        };
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            code,
            format!("The {scope} limit of {limit} {unit} per minute is reached."),
        )
    }

    /// The shared limit store cannot be reached and the gateway fails closed: the caller's key is
    /// fine, so this is a 503 to retry, never an authentication error.
    pub fn limits_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "limits_unavailable",
            "Budgets and rate limits cannot be checked right now; retry shortly.",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "Internal gateway error.",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    pub fn stream_interrupted() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_stream_error",
            "The upstream stream failed after the response started.",
        )
    }
}

/// Client input echoed into a message is cut short and stripped of control characters, so an
/// error body can never carry a large or terminal-hostile payload back.
fn printable(input: &str) -> String {
    input
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect()
}
