//! Bedrock's errors, classified. An error answer names its exception in the `x-amzn-ErrorType`
//! header (`ThrottlingException:http://internal.amazon.com/...`; botocore also reads a `__type`
//! body member) and explains it in `{"message": ...}`; a stream names it in the
//! `:exception-type` header of an exception frame, in lower camel case.

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::super::{CallError, ErrorClass};
use super::NAME;

/// A non-2xx answer.
pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let name = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .or_else(|| parsed.as_ref().and_then(|b| b.kind.as_deref()))
        .map(exception_name);
    let message = parsed.as_ref().and_then(ErrorBody::message);
    let class = class(name, Some(status), message.unwrap_or_default());
    classified(class, headers, message.map(str::to_owned))
}

/// An exception frame in a stream: `name` from `:exception-type`, `payload` its JSON.
pub fn from_exception(name: &str, payload: &[u8]) -> CallError {
    let parsed = serde_json::from_slice::<ErrorBody>(payload).ok();
    let message = parsed.as_ref().and_then(ErrorBody::message);
    let class = class(Some(name), None, message.unwrap_or_default());
    classified(class, &HeaderMap::new(), message.map(str::to_owned))
}

fn classified(class: ErrorClass, headers: &HeaderMap, message: Option<String>) -> CallError {
    // Bedrock sends no reset time of its own (no Retry-After, no reset headers); one added by a
    // proxy in front is still read from the headers.
    CallError::classified(class, headers, None, message, NAME)
}

/// `ThrottlingException:http://internal.amazon.com/...` and `com.amazon.coral#Throttling...`
/// both name `ThrottlingException`.
fn exception_name(raw: &str) -> &str {
    let name = raw.split(':').next().unwrap_or(raw);
    name.rsplit('#').next().unwrap_or(name).trim()
}

/// The class of an exception (case-insensitive: streams spell it `throttlingException`), or of
/// the status when the name is missing or unknown.
fn class(name: Option<&str>, status: Option<StatusCode>, message: &str) -> ErrorClass {
    let name = name.unwrap_or_default().to_ascii_lowercase();
    match name.as_str() {
        "throttlingexception" | "servicequotaexceededexception" => ErrorClass::RateLimit,
        // The model is being loaded or the service sheds load: capacity, not our quota.
        "serviceunavailableexception" | "modelnotreadyexception" => ErrorClass::Overloaded,
        "accessdeniedexception"
        | "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception"
        | "expiredtokenexception"
        | "requestexpired" => ErrorClass::Auth,
        "resourcenotfoundexception" => ErrorClass::NotFound,
        "validationexception" if is_deployment_fault(message) => ErrorClass::NotFound,
        "validationexception" | "conflictexception" => invalid_request(message),
        "modelerrorexception"
        | "modeltimeoutexception"
        | "modelstreamerrorexception"
        | "internalserverexception" => ErrorClass::Upstream,
        _ => match status.map(|s| s.as_u16()) {
            Some(429) => ErrorClass::RateLimit,
            Some(503) => ErrorClass::Overloaded,
            Some(401 | 403) => ErrorClass::Auth,
            Some(404) => ErrorClass::NotFound,
            Some(400 | 413 | 422) => invalid_request(message),
            _ => ErrorClass::Upstream,
        },
    }
}

/// Bedrock answers a model id it does not serve, or one that needs an inference profile, with a
/// `ValidationException` too: that is the deployment's config, so the next deployment is tried.
fn is_deployment_fault(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("model identifier is invalid")
        || message.contains("on-demand throughput isn")
        || message.contains("inference profile")
}

/// A `ValidationException` is the caller's mistake; its message tells a prompt too long for
/// the model ("Input is too long for requested model.") and content the model's filters
/// blocked ("This request has been blocked by our content filters.") apart.
fn invalid_request(message: &str) -> ErrorClass {
    let message = message.to_ascii_lowercase();
    if [
        "too long",
        "context window",
        "context length",
        "too many input tokens",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        ErrorClass::ContextLength
    } else if message.contains("content filter") {
        ErrorClass::ContentPolicy
    } else {
        ErrorClass::InvalidRequest
    }
}

/// `{"message": ...}` (some AWS front ends spell it `Message`), maybe with `__type`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "Message")]
    message_capitalised: Option<String>,
    #[serde(default, rename = "__type")]
    kind: Option<String>,
}

impl ErrorBody {
    fn message(&self) -> Option<&str> {
        self.message
            .as_deref()
            .or(self.message_capitalised.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, kind: Option<&str>, body: &str) -> CallError {
        let mut headers = HeaderMap::new();
        if let Some(kind) = kind {
            headers.insert("x-amzn-errortype", kind.parse().unwrap());
        }
        from_response(
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.as_bytes(),
        )
    }

    #[test]
    fn classifies_every_documented_exception() {
        let cases = [
            (400, "ValidationException", ErrorClass::InvalidRequest),
            (400, "ServiceQuotaExceededException", ErrorClass::RateLimit),
            (400, "ConflictException", ErrorClass::InvalidRequest),
            (403, "AccessDeniedException", ErrorClass::Auth),
            (403, "UnrecognizedClientException", ErrorClass::Auth),
            (403, "InvalidSignatureException", ErrorClass::Auth),
            (404, "ResourceNotFoundException", ErrorClass::NotFound),
            (408, "ModelTimeoutException", ErrorClass::Upstream),
            (424, "ModelErrorException", ErrorClass::Upstream),
            (429, "ThrottlingException", ErrorClass::RateLimit),
            (429, "ModelNotReadyException", ErrorClass::Overloaded),
            (500, "InternalServerException", ErrorClass::Upstream),
            (503, "ServiceUnavailableException", ErrorClass::Overloaded),
        ];
        for (status, name, want) in cases {
            let header = format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/");
            let error = answer(status, Some(&header), r#"{"message":"m"}"#);
            assert_eq!(error.class(), want, "{name}");
            assert_eq!(error.status, Some(want.status()), "{name}");
        }
    }

    #[test]
    fn a_validation_message_tells_context_length_and_content_filters_apart() {
        let long = answer(
            400,
            Some("ValidationException"),
            r#"{"message":"Input is too long for requested model."}"#,
        );
        assert_eq!(long.class(), ErrorClass::ContextLength);
        assert_eq!(long.message, "Input is too long for requested model.");
        let blocked = answer(
            400,
            Some("ValidationException"),
            r#"{"message":"This request has been blocked by our content filters."}"#,
        );
        assert_eq!(blocked.class(), ErrorClass::ContentPolicy);
        let plain = answer(
            400,
            Some("ValidationException"),
            r#"{"message":"messages: must not be empty"}"#,
        );
        assert_eq!(plain.class(), ErrorClass::InvalidRequest);
        assert!(plain.is_client_error());
        assert_eq!(plain.message, "messages: must not be empty");
    }

    #[test]
    fn without_the_header_reads_the_body_type_then_the_status() {
        let typed = answer(
            400,
            None,
            r#"{"__type":"com.amazon.coral.service#ThrottlingException","message":"slow down"}"#,
        );
        assert_eq!(typed.class(), ErrorClass::RateLimit);
        assert_eq!(answer(503, None, "<html>").class(), ErrorClass::Overloaded);
        assert_eq!(answer(502, None, "").class(), ErrorClass::Upstream);
        assert_eq!(
            answer(400, None, r#"{"Message":"bad"}"#).message,
            "bad",
            "the capitalised spelling"
        );
    }

    #[test]
    fn server_side_messages_are_not_passed_on() {
        let denied = answer(
            403,
            Some("AccessDeniedException"),
            r#"{"message":"User: arn:aws:iam::123456789012:user/x is not authorized"}"#,
        );
        assert!(!denied.message.contains("arn:aws"), "{}", denied.message);
    }

    #[test]
    fn stream_exceptions_use_the_same_classes() {
        let throttled = from_exception(
            "throttlingException",
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(throttled.class(), ErrorClass::RateLimit);
        let model = from_exception(
            "modelStreamErrorException",
            br#"{"message":"boom","originalStatusCode":500}"#,
        );
        assert_eq!(model.class(), ErrorClass::Upstream);
        let long = from_exception(
            "validationException",
            br#"{"message":"Input is too long for requested model."}"#,
        );
        assert_eq!(long.class(), ErrorClass::ContextLength);
        assert_eq!(
            from_exception("somethingNewException", b"{}").class(),
            ErrorClass::Upstream
        );
    }
}
