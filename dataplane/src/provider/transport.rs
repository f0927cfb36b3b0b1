//! The HTTP exchange every adapter shares: send with the first-byte timeout, read a bounded body,
//! or hand the body on as a stream that fails when it stalls.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, stream, stream::BoxStream};
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::{AttemptTimeouts, CallError, CallErrorKind, HttpClient};

/// Largest non-streaming answer accepted (images as base64 can be large).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Error bodies are read only this far: enough for a message, not for abuse.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// `modelgate/<version>`, sent to every provider.
pub const USER_AGENT: &str = concat!("modelgate/", env!("CARGO_PKG_VERSION"));

/// A JSON POST to `url` with the headers every adapter sends.
pub fn json_post(url: &str, stream: bool) -> http::request::Builder {
    let builder = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, USER_AGENT);
    if stream {
        builder.header(header::ACCEPT, "text/event-stream")
    } else {
        builder
    }
}

/// A header value holding a credential: marked sensitive so no debug output shows it.
pub fn secret_header(value: &str) -> Result<HeaderValue, CallError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        CallError::new(
            CallErrorKind::Connect,
            "the deployment's credential is not a valid header value",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Finishes an upstream request; a failure is the deployment's URL, never the client's input.
pub fn with_body(
    builder: http::request::Builder,
    body: Bytes,
) -> Result<Request<Bytes>, CallError> {
    builder
        .body(body)
        .map_err(|e| CallError::new(CallErrorKind::Connect, format!("bad upstream URL: {e}")))
}

/// Puts the deployment's API key (when it has one) in `name`, as is or after `prefix`
/// (`"Bearer "`).
pub fn api_key_header(
    deployment: &modelgate_crds::compiled::CompiledDeployment,
    request: &mut Request<Bytes>,
    name: http::HeaderName,
    prefix: &str,
) -> Result<(), CallError> {
    if let Some(key) = &deployment.api_key {
        let value = if prefix.is_empty() {
            secret_header(key.expose())?
        } else {
            secret_header(&format!("{prefix}{}", key.expose()))?
        };
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

/// Names the attempt's span as the provider's parent (W3C trace context). Sent after any request
/// signing: it is not part of what a provider authenticates.
pub fn traceparent(request: &mut Request<Bytes>, span: &crate::trace::SpanIds) {
    if let Ok(value) = HeaderValue::from_str(&span.header()) {
        request
            .headers_mut()
            .insert(crate::trace::TRACEPARENT, value);
    }
}

/// Sends `request` and waits for the response head within the first-byte timeout.
pub async fn send(
    http: &HttpClient,
    request: Request<Full<Bytes>>,
    timeouts: AttemptTimeouts,
) -> Result<Response<Incoming>, CallError> {
    tokio::time::timeout(timeouts.first_byte, http.request(request))
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
        })
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
pub async fn read_body(
    mut body: Incoming,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, CallError> {
    // A body that arrives in one frame (most do) is forwarded as received; only a body in
    // several frames is joined.
    let mut first: Option<Bytes> = None;
    let mut out = BytesMut::new();
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| CallError::new(CallErrorKind::Timeout, "the response body stalled"))?;
        match frame {
            None => return Ok(first.unwrap_or_else(|| out.freeze())),
            Some(Err(e)) => {
                return Err(CallError::new(
                    CallErrorKind::Protocol,
                    format!("response body broke: {e}"),
                ));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let held = first.as_ref().map_or(out.len(), Bytes::len);
                    if held + data.len() > limit {
                        return Err(CallError::new(
                            CallErrorKind::Protocol,
                            format!("response body larger than {limit} bytes"),
                        ));
                    }
                    if held == 0 {
                        first = Some(data);
                    } else {
                        out.extend_from_slice(&first.take().unwrap_or_default());
                        out.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// The body as a stream of chunks; a stall longer than `idle` ends it with a timeout error.
pub fn body_stream(body: Incoming, idle: Duration) -> BoxStream<'static, Result<Bytes, CallError>> {
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
