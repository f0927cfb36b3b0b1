//! Error answers of Azure OpenAI, Mistral and DeepSeek, classified. The bodies come in three
//! shapes: OpenAI's envelope `{"error":{message,type,param,code}}` (Azure's `code` is often the
//! status as a string, or `content_filter`), Mistral's flat `{"object":"error",message,type,
//! param,code}`, and Mistral's schema validation `{"detail":[{loc,msg,type}]}`.

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::super::{CallError, ErrorClass};

/// A non-2xx answer, classified. Reset times come from `retry-after-ms`/`retry-after` (Azure
/// sends both, Mistral the latter).
pub fn classify(
    provider: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> CallError {
    let detail = Detail::read(body);
    let class = match status.as_u16() {
        401 | 403 => ErrorClass::Auth,
        // DeepSeek's "insufficient balance": our account's problem, so it is not the caller's
        // mistake and another deployment may well succeed.
        402 => ErrorClass::Quota,
        404 => ErrorClass::NotFound,
        429 if detail.code.as_deref() == Some("insufficient_quota") => ErrorClass::Quota,
        429 => ErrorClass::RateLimit,
        503 | 529 => ErrorClass::Overloaded,
        408 | 409 => ErrorClass::Upstream,
        400..=499 if detail.is_context_length() => ErrorClass::ContextLength,
        400..=499 if detail.is_content_policy() => ErrorClass::ContentPolicy,
        400..=499 => ErrorClass::InvalidRequest,
        _ => ErrorClass::Upstream,
    };
    let mut error = CallError::classified(class, headers, None, detail.message, provider);
    if error.is_client_error() {
        error.param = detail.param;
    } else if class == ErrorClass::Quota {
        error.message = format!("{provider} answered: the account is out of credit ({status})");
    }
    error
}

/// What an error body says.
#[derive(Debug, Default)]
struct Detail {
    message: Option<String>,
    code: Option<String>,
    param: Option<String>,
}

impl Detail {
    fn read(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let error = value
            .get("error")
            .filter(|e| e.is_object())
            .unwrap_or(&value);
        let text = |key| error.get(key).and_then(Value::as_str).map(str::to_owned);
        Self {
            message: text("message").or_else(|| value.get("detail").and_then(validation)),
            code: error.get("code").and_then(|code| match code {
                Value::String(code) => Some(code.clone()),
                Value::Number(code) => Some(code.to_string()),
                _ => None,
            }),
            param: text("param"),
        }
    }

    fn is_context_length(&self) -> bool {
        self.code.as_deref() == Some("context_length_exceeded")
            || self.message.as_deref().is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                m.contains("context length") || m.contains("context window")
            })
    }

    fn is_content_policy(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("content_filter" | "content_policy_violation")
        ) || self
            .message
            .as_deref()
            // DeepSeek's refusal of a prompt its content policy flags.
            .is_some_and(|m| m.contains("Content Exists Risk"))
    }
}

/// Mistral's 422 `detail`: a list of `{loc, msg}` as `body.field: message; ...`, or a string.
fn validation(detail: &Value) -> Option<String> {
    match detail {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => {
            let lines: Vec<String> = items
                .iter()
                .filter_map(|item| {
                    let message = item.get("msg")?.as_str()?;
                    let location: Vec<String> = item
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|loc| {
                            loc.iter()
                                .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(if location.is_empty() {
                        message.to_owned()
                    } else {
                        format!("{}: {message}", location.join("."))
                    })
                })
                .collect();
            (!lines.is_empty()).then(|| lines.join("; "))
        }
        _ => None,
    }
}
