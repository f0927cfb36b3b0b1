//! OpenAI, every OpenAI-compatible server, Azure OpenAI, Mistral and DeepSeek: one wire format
//! with per-service differences (`Flavor`).
//!
//! OpenAI and Azure get the client's body forwarded as received (only `model` replaced,
//! modelgate's extension removed, and for streams `stream_options.include_usage` set, since every
//! stream is costed) and their answers pass through untouched, a stream watched for its
//! `[DONE]`; Azure differs only in its URLs, its `api-key` header and the empty prompt-filter
//! chunk it opens streams with, which is taken out. Mistral's and DeepSeek's request schemas are narrower than OpenAI's, so their
//! bodies are rebuilt from an allow-list, and their answers are normalised to OpenAI's values
//! (finish reasons, content arrays, usage on its own chunk).

mod azure;
mod body;
mod compat;
mod compat_stream;
mod deepseek;
mod errors;
mod mistral;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, Request, StatusCode, header};
use serde::Deserialize;

use modelgate_crds::ProviderKind;

use crate::request::{Native, NativeApi};

use super::{
    CallError, CallErrorKind, Endpoint, ErrorClass, HttpClient, Target, Usage,
    translated::{Dialect, StreamTranslator, Translated},
    transport,
};

const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Which OpenAI-format service a deployment talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Azure,
    Mistral,
    Deepseek,
}

pub struct OpenAi(pub Flavor);

impl Dialect for OpenAi {
    fn name(&self) -> &'static str {
        match self.0 {
            Flavor::OpenAi => "openai",
            Flavor::Azure => "azure",
            Flavor::Mistral => mistral::NAME,
            Flavor::Deepseek => deepseek::NAME,
        }
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        let deployment = target.deployment;
        let url = match self.0 {
            Flavor::OpenAi => format!(
                "{}{}",
                base_url(deployment.base_url.as_deref(), OPENAI_BASE_URL),
                target.endpoint.openai_path()
            ),
            Flavor::Azure => azure::url(deployment, target.endpoint),
            Flavor::Mistral => mistral::url(deployment, target.endpoint)?,
            Flavor::Deepseek => deepseek::url(deployment, target.endpoint)?,
        };
        let body = match self.0 {
            Flavor::OpenAi | Flavor::Azure => {
                target.request.forward(&deployment.model, target.stream)
            }
            Flavor::Mistral => mistral::body(target)?,
            Flavor::Deepseek => deepseek::body(target)?,
        };
        transport::with_body(transport::json_post(&url, target.stream), body)
    }

    /// A Responses client's request goes to OpenAI's (and Azure's) own Responses API as sent,
    /// with the deployment's model; OpenAI-compatible servers, Mistral and DeepSeek get the chat
    /// translation (few of them have the Responses API).
    fn native_request(
        &self,
        target: &Target<'_>,
        native: &Native,
    ) -> Option<Result<Request<Bytes>, CallError>> {
        let deployment = target.deployment;
        let url = match (self.0, native.api, deployment.provider) {
            (Flavor::OpenAi, NativeApi::Responses, ProviderKind::Openai) => format!(
                "{}/responses",
                base_url(deployment.base_url.as_deref(), OPENAI_BASE_URL)
            ),
            (Flavor::Azure, NativeApi::Responses, _) => format!(
                "{}/openai/v1/responses",
                base_url(deployment.base_url.as_deref(), "")
            ),
            _ => return None,
        };
        Some(transport::with_body(
            transport::json_post(&url, target.stream),
            native.body.with_model(&deployment.model),
        ))
    }

    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        _http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        let (name, prefix) = match self.0 {
            Flavor::Azure => (HeaderName::from_static("api-key"), ""),
            Flavor::OpenAi | Flavor::Mistral | Flavor::Deepseek => {
                (header::AUTHORIZATION, "Bearer ")
            }
        };
        Box::pin(async move { transport::api_key_header(target.deployment, request, name, prefix) })
    }

    fn response(
        &self,
        target: &Target<'_>,
        _headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Translated, CallError> {
        match (self.0, target.endpoint) {
            (Flavor::Mistral | Flavor::Deepseek, Endpoint::ChatCompletions) => {
                compat::completion(self.name(), &body)
            }
            _ => pass_through(body),
        }
    }

    fn stream(&self, _target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        match self.0 {
            Flavor::OpenAi => None,
            Flavor::Azure => Some(Box::new(azure::AzureStream::default())),
            Flavor::Mistral | Flavor::Deepseek => {
                Some(Box::new(compat_stream::CompatStream::new(self.name())))
            }
        }
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        match self.0 {
            Flavor::OpenAi => error(status, headers, body),
            Flavor::Azure | Flavor::Mistral | Flavor::Deepseek => {
                errors::classify(self.name(), status, headers, body)
            }
        }
    }
}

/// The deployment's base URL without a trailing slash, or the service's own.
fn base_url<'a>(configured: Option<&'a str>, default: &'a str) -> &'a str {
    configured.unwrap_or(default).trim_end_matches('/')
}

/// An endpoint a service does not offer: a 400 naming it, before anything is sent.
fn no_endpoint(provider: &str, endpoint: Endpoint) -> CallError {
    CallError::unsupported(format!(
        "{} is not supported by provider {provider}",
        endpoint.openai_path().trim_start_matches('/')
    ))
}

/// An answer already in OpenAI's shape: one parse both validates the body (a broken answer is a
/// failed attempt, never something to hand a client) and reads the usage.
fn pass_through(body: Bytes) -> Result<Translated, CallError> {
    let usage = serde_json::from_slice::<WithUsage>(&body)
        .map_err(|e| {
            CallError::new(
                CallErrorKind::Protocol,
                format!("the response is not valid JSON: {e}"),
            )
        })?
        .usage;
    Ok(Translated { body, usage })
}

/// An OpenAI-shaped error answer: status, Retry-After, and for the caller's own mistakes the
/// provider's code and message (other errors, auth above all, may quote our credential).
pub fn error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
    if status == StatusCode::TOO_MANY_REQUESTS
        && upstream_error(body)
            .is_some_and(|(code, _)| code.as_deref() == Some("insufficient_quota"))
    {
        // Out of credit, not rate limited: no reset to wait for; another deployment may do.
        return CallError::classified(ErrorClass::Quota, headers, None, None, "openai");
    }
    let mut error = CallError::status(status, headers, None, format!("upstream answered {status}"));
    if error.is_client_error()
        && let Some((code, message)) = upstream_error(body)
    {
        error.class = match code.as_deref() {
            Some("context_length_exceeded") => ErrorClass::ContextLength,
            Some("content_filter" | "content_policy_violation") => ErrorClass::ContentPolicy,
            _ => error.class,
        };
        error.provider_code = code;
        error.message = message;
    }
    error
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// The provider's code and message from an OpenAI error body.
fn upstream_error(body: &[u8]) -> Option<(Option<String>, String)> {
    let envelope = serde_json::from_slice::<ErrorEnvelope>(body).ok()?;
    let code = envelope
        .error
        .code
        .and_then(|c| c.as_str().map(str::to_owned));
    Some((code, envelope.error.message?))
}
