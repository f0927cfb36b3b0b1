//! The HTTP exchange every adapter shares: send with the first-byte timeout, read a bounded body,
//! or hand the body on as a stream that fails when it stalls.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream::BoxStream};
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

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
        const TRACEPARENT: http::HeaderName =
            http::HeaderName::from_static(crate::trace::TRACEPARENT);
        request.headers_mut().insert(TRACEPARENT, value);
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
    IdleCut::new(body, idle).boxed()
}

/// A body cut when no chunk comes for `idle`. The timer is not moved for each chunk (a timer
/// wheel update per SSE event); when it fires early it is set again from the last chunk.
struct IdleCut<B> {
    body: Option<B>,
    idle: Duration,
    last_chunk: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<B> IdleCut<B> {
    fn new(body: B, idle: Duration) -> Self {
        Self {
            body: Some(body),
            idle,
            last_chunk: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> Stream for IdleCut<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Item = Result<Bytes, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.body = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.body = None;
                    return Poll::Ready(Some(Err(CallError::new(
                        CallErrorKind::Protocol,
                        format!("the stream broke: {e}"),
                    ))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    this.last_chunk = Instant::now();
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Pending => break,
            }
        }
        while this.deadline.as_mut().poll(cx).is_ready() {
            let due = this.last_chunk + this.idle;
            if due <= Instant::now() {
                this.body = None;
                return Poll::Ready(Some(Err(CallError::new(
                    CallErrorKind::Timeout,
                    "the stream stalled",
                ))));
            }
            this.deadline.as_mut().reset(due);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;
    use tokio::sync::mpsc;

    use super::*;

    type Frames = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

    fn cut_body(idle: Duration) -> (Frames, BoxStream<'static, Result<Bytes, CallError>>) {
        let (tx, mut rx) = mpsc::channel(4);
        let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let stream = IdleCut::new(StreamBody::new(frames), idle).boxed();
        (tx, stream)
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_closer_than_idle_keep_the_stream_however_long_it_runs() {
        let idle = Duration::from_secs(1);
        let (tx, mut stream) = cut_body(idle);
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            }
        });
        let started = Instant::now();
        for _ in 0..5 {
            assert!(matches!(stream.next().await, Some(Ok(_))));
        }
        assert!(stream.next().await.is_none(), "the sender ended it");
        assert!(started.elapsed() >= Duration::from_millis(4500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_of_idle_after_the_last_chunk_cuts_it_then() {
        let idle = Duration::from_secs(1);
        let (tx, mut stream) = cut_body(idle);
        tokio::time::sleep(Duration::from_millis(700)).await;
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .ok();
        assert!(matches!(stream.next().await, Some(Ok(_))));
        let chunk_at = Instant::now();
        let Some(Err(error)) = stream.next().await else {
            panic!("the stall was not cut");
        };
        assert_eq!(error.kind, CallErrorKind::Timeout);
        assert_eq!(
            chunk_at.elapsed(),
            idle,
            "cut one idle after the chunk, not after the start"
        );
        assert!(stream.next().await.is_none());
        drop(tx);
    }
}
