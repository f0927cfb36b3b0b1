//! OpenAI and every OpenAI-compatible server: the client's body is forwarded as received, with
//! only `model` replaced and modelgate's own extension removed; answers pass through untouched.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, future::BoxFuture, stream};
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{Call, CallError, CallErrorKind, Provider, UpstreamBody, Usage};

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Largest non-streaming answer accepted (images as base64 can be large).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Error bodies are read only this far: enough for a message, not for abuse.
const MAX_ERROR_BYTES: usize = 64 * 1024;

pub struct OpenAi;

impl Provider for OpenAi {
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<UpstreamBody, CallError>> {
        Box::pin(async move {
            let base = call
                .deployment
                .base_url
                .as_deref()
                .unwrap_or(DEFAULT_BASE_URL);
            let url = format!("{base}{}", call.endpoint.openai_path());
            let body = call.request.forward(&call.deployment.model, call.stream);
            let mut request = Request::post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    header::USER_AGENT,
                    concat!("modelgate/", env!("CARGO_PKG_VERSION")),
                );
            if call.stream {
                request = request.header(header::ACCEPT, "text/event-stream");
            }
            if let Some(key) = &call.deployment.api_key {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| {
                        CallError::new(
                            CallErrorKind::Connect,
                            "the deployment's API key is not a valid header value",
                        )
                    })?;
                value.set_sensitive(true);
                request = request.header(header::AUTHORIZATION, value);
            }
            let request = request.body(Full::new(body)).map_err(|e| {
                CallError::new(
                    CallErrorKind::Connect,
                    format!("cannot build the upstream request: {e}"),
                )
            })?;

            let response =
                tokio::time::timeout(call.timeouts.first_byte, call.http.request(request))
                    .await
                    .map_err(|_| {
                        CallError::new(
                            CallErrorKind::Timeout,
                            "no response head within the first-byte timeout",
                        )
                    })?
                    .map_err(|e| {
                        let kind = if e.is_connect() {
                            CallErrorKind::Connect
                        } else {
                            CallErrorKind::Protocol
                        };
                        CallError::new(kind, describe_client_error(&e))
                    })?;

            let status = response.status();
            if !status.is_success() {
                let (parts, body) = response.into_parts();
                let bytes = read_body(body, MAX_ERROR_BYTES, call.timeouts.idle)
                    .await
                    .unwrap_or_default();
                let mut error = CallError::status(
                    status,
                    &parts.headers,
                    None,
                    format!("upstream answered {status}"),
                );
                // Only the caller's own mistakes carry the provider's words back: other errors
                // (auth above all) may quote our credential, even partly masked.
                if error.is_client_error()
                    && let Some((code, message)) = upstream_error(&bytes)
                {
                    error.provider_code = code;
                    error.message = message;
                }
                return Err(error);
            }
            if call.stream {
                return Ok(UpstreamBody::Stream(body_stream(
                    response.into_body(),
                    call.timeouts.idle,
                )));
            }
            let body =
                read_body(response.into_body(), MAX_RESPONSE_BYTES, call.timeouts.idle).await?;
            // One parse both validates the body (a broken answer is a failed attempt, never
            // something to hand a client) and reads the usage.
            let usage = serde_json::from_slice::<WithUsage>(&body)
                .map_err(|e| {
                    CallError::new(
                        CallErrorKind::Protocol,
                        format!("the response is not valid JSON: {e}"),
                    )
                })?
                .usage;
            Ok(UpstreamBody::Complete { body, usage })
        })
    }
}

/// The chain of a hyper client error, without URLs (they may carry a path the operator considers
/// private) and without headers.
fn describe_client_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut message = String::from(if error.is_connect() {
        "connect error"
    } else {
        "upstream error"
    });
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Reads a whole body, failing when it grows past `limit` or stalls for `idle`.
async fn read_body(mut body: Incoming, limit: usize, idle: Duration) -> Result<Bytes, CallError> {
    let mut out = BytesMut::new();
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| CallError::new(CallErrorKind::Timeout, "the response body stalled"))?;
        match frame {
            None => return Ok(out.freeze()),
            Some(Err(e)) => {
                return Err(CallError::new(
                    CallErrorKind::Protocol,
                    format!("response body broke: {e}"),
                ));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > limit {
                        return Err(CallError::new(
                            CallErrorKind::Protocol,
                            format!("response body larger than {limit} bytes"),
                        ));
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

/// The body as a stream of chunks; a stall longer than `idle` ends it with a timeout error.
fn body_stream(
    body: Incoming,
    idle: Duration,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, CallError>> {
    stream::unfold(Some(body), move |state| async move {
        let mut body = state?;
        loop {
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    return Some((
                        Err(CallError::new(CallErrorKind::Timeout, "the stream stalled")),
                        None,
                    ));
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    return Some((
                        Err(CallError::new(
                            CallErrorKind::Protocol,
                            format!("the stream broke: {e}"),
                        )),
                        None,
                    ));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), Some(body)));
                    }
                }
            }
        }
    })
    .boxed()
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
