//! The adapter for every provider whose API is not OpenAI's: a `Dialect` supplies the pure
//! translations (request, complete answer, stream events, errors) and the credentials; this
//! module does the HTTP exchange around them, the same way for all.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

use super::{
    Call, CallError, CallErrorKind, Endpoint, HttpClient, Provider, Target, UpstreamBody, Usage,
    done_watch, embedding_batches,
    native::{self, NativeAnswer, NativeBody},
    output::ChunkWriter,
    transport,
};
use crate::{
    request::{Native, NativeApi},
    sse::EventError,
};

pub use super::error::{cut_short, malformed};

/// A complete answer, translated: OpenAI JSON and the usage it reports.
pub struct Translated {
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// One provider's wire format.
pub trait Dialect: Send + Sync + 'static {
    /// The provider's name, for messages.
    fn name(&self) -> &'static str;

    /// The upstream request for `target`, without credentials.
    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError>;

    /// Adds the deployment's credentials to `request` (an OAuth token may need a call of its
    /// own; a signature covers the final body).
    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>>;

    /// A complete (2xx) answer, in OpenAI's shape. The body is handed over, so an answer that is
    /// already OpenAI's is passed on without a copy; some providers put usage in a header.
    fn response(
        &self,
        target: &Target<'_>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Translated, CallError>;

    /// The most inputs one embeddings call may carry at this deployment; larger requests are
    /// split into batches (`None`: no limit the gateway needs to know).
    fn embedding_batch(&self, _target: &Target<'_>) -> Option<usize> {
        None
    }

    /// The client's own request, when this provider speaks the client's API: the same body with
    /// only the model replaced (`None`: the provider gets the chat translation).
    fn native_request(
        &self,
        _target: &Target<'_>,
        _native: &Native,
    ) -> Option<Result<Request<Bytes>, CallError>> {
        None
    }

    /// A fresh translator for one streamed answer; `None` passes OpenAI SSE through untouched.
    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>>;

    /// A non-2xx answer, classified.
    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError;

    /// The provider answered `status` to a request `authorize` finished at `authorized_at`: a
    /// dialect that caches credentials drops one the provider no longer takes (Vertex, a
    /// revoked OAuth token on a 401).
    fn refused(&self, _target: &Target<'_>, _status: StatusCode, _authorized_at: Instant) {}
}

/// Turns a provider's streamed bytes into OpenAI SSE bytes.
pub trait StreamTranslator: Send {
    /// Translates the bytes of one body chunk, appending OpenAI SSE to `out`.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CallError>;

    /// The provider closed the stream: writes what is left, or fails when the stream ended
    /// before the provider's last event (a cut stream must never look complete).
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CallError>;
}

/// A `Provider` speaking dialect `D`.
pub struct Translating<D>(pub D);

impl<D: Dialect> Provider for Translating<D> {
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<UpstreamBody, CallError>> {
        Box::pin(async move {
            let target = call.target();
            if call.endpoint == Endpoint::Embeddings
                && let Some(limit) = self.0.embedding_batch(&target)
                && let Some(batches) = embedding_batches::split(call.request, limit)?
            {
                let exchanges: Vec<BoxFuture<'_, Result<UpstreamBody, CallError>>> = batches
                    .iter()
                    .map(|request| {
                        self.exchange(Call {
                            endpoint: call.endpoint,
                            request,
                            native: None,
                            stream: false,
                            deployment: call.deployment,
                            http: call.http.clone(),
                            timeouts: call.timeouts,
                            trace: call.trace,
                        })
                    })
                    .collect();
                let answers: Vec<UpstreamBody> = futures_util::stream::iter(exchanges)
                    .buffered(embedding_batches::CONCURRENT_BATCHES)
                    .try_collect()
                    .await?;
                return embedding_batches::merge(self.0.name(), answers);
            }
            self.exchange(call).await
        })
    }
}

impl<D: Dialect> Translating<D> {
    /// One request to the provider and its answer.
    fn exchange<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<UpstreamBody, CallError>> {
        Box::pin(async move {
            let dialect = &self.0;
            let target = call.target();
            let (native, mut request) = match target.native {
                Some(native) => match dialect.native_request(&target, native) {
                    Some(request) => (Some(native.api), request?),
                    None => {
                        if let Some(untranslatable) = &native.untranslatable {
                            return Err(CallError::unsupported(format!(
                                "{} (this call went to provider {})",
                                untranslatable.message,
                                dialect.name()
                            ))
                            .with_param(untranslatable.param.clone()));
                        }
                        (None, dialect.request(&target)?)
                    }
                },
                None => (None, dialect.request(&target)?),
            };
            dialect.authorize(&target, &call.http, &mut request).await?;
            let authorized_at = Instant::now();
            if let Some(span) = call.trace {
                transport::traceparent(&mut request, &span);
            }
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, Full::new(body));
            let response = transport::send(&call.http, request, call.timeouts).await?;
            let status = response.status();
            if !status.is_success() {
                let (parts, body) = response.into_parts();
                let bytes =
                    transport::read_body(body, transport::MAX_ERROR_BYTES, call.timeouts.idle)
                        .await
                        .unwrap_or_default();
                dialect.refused(&target, status, authorized_at);
                return Err(redact(
                    dialect.error(status, &parts.headers, &bytes),
                    &target,
                ));
            }
            if let Some(api) = native {
                return native_answer(response, api, &call, dialect.name()).await;
            }
            if call.stream {
                let upstream = transport::body_stream(response.into_body(), call.timeouts.idle);
                return Ok(UpstreamBody::Stream(match dialect.stream(&target) {
                    Some(translator) => translate_stream(upstream, translator, dialect.name()),
                    None => done_watch::require_done(upstream, dialect.name()),
                }));
            }
            let (parts, body) = response.into_parts();
            let headers = parts.headers;
            let body =
                transport::read_body(body, transport::MAX_RESPONSE_BYTES, call.timeouts.idle)
                    .await?;
            let translated = dialect.response(&target, &headers, body)?;
            Ok(UpstreamBody::Complete {
                body: translated.body,
                usage: translated.usage,
            })
        })
    }
}

/// A 2xx answer in the client's own API, passed on as the provider sent it.
async fn native_answer(
    response: http::Response<hyper::body::Incoming>,
    api: NativeApi,
    call: &Call<'_>,
    provider: &'static str,
) -> Result<UpstreamBody, CallError> {
    let body = if call.stream {
        let upstream = transport::body_stream(response.into_body(), call.timeouts.idle);
        NativeBody::Stream(native::require_end(upstream, api, provider))
    } else {
        let body = transport::read_body(
            response.into_body(),
            transport::MAX_RESPONSE_BYTES,
            call.timeouts.idle,
        )
        .await?;
        let usage = native::usage(api, &body);
        NativeBody::Complete { body, usage }
    };
    Ok(UpstreamBody::Native(NativeAnswer { api, body }))
}

/// Runs `translator` over `upstream`, chunk by chunk.
pub fn translate_stream(
    upstream: BoxStream<'static, Result<Bytes, CallError>>,
    translator: Box<dyn StreamTranslator>,
    provider: &'static str,
) -> BoxStream<'static, Result<Bytes, CallError>> {
    enum State {
        Running(
            BoxStream<'static, Result<Bytes, CallError>>,
            Box<dyn StreamTranslator>,
        ),
        /// The failure comes after the bytes translated in the same read: those are the client's.
        Failing(CallError),
        Done,
    }
    /// Hands on `out`, then `error` (if any) on the next poll.
    fn then_fail(out: Vec<u8>, error: CallError) -> Option<(Result<Bytes, CallError>, State)> {
        if out.is_empty() {
            Some((Err(error), State::Done))
        } else {
            Some((Ok(Bytes::from(out)), State::Failing(error)))
        }
    }
    futures_util::stream::unfold(State::Running(upstream, translator), |state| async move {
        let (mut upstream, mut translator) = match state {
            State::Running(upstream, translator) => (upstream, translator),
            State::Failing(error) => return Some((Err(error), State::Done)),
            State::Done => return None,
        };
        loop {
            let mut out = Vec::new();
            match upstream.next().await {
                Some(Ok(bytes)) => match translator.feed(&bytes, &mut out) {
                    Ok(()) if out.is_empty() => continue,
                    Ok(()) => {
                        let running = State::Running(upstream, translator);
                        return Some((Ok(Bytes::from(out)), running));
                    }
                    Err(e) => return then_fail(out, e),
                },
                Some(Err(e)) => return Some((Err(e), State::Done)),
                None => {
                    return match translator.finish(&mut out) {
                        Ok(()) if out.is_empty() => None,
                        Ok(()) => Some((Ok(Bytes::from(out)), State::Done)),
                        Err(e) => then_fail(out, e),
                    };
                }
            }
        }
    })
    .map(move |item| {
        item.map_err(|mut e| {
            if e.kind == CallErrorKind::Protocol && !e.message.starts_with(provider) {
                e.message = format!("{provider}: {}", e.message);
            }
            e
        })
    })
    .boxed()
}

/// A provider message may quote the credential it was sent; it never reaches a log or a client.
fn redact(mut error: CallError, target: &Target<'_>) -> CallError {
    let secrets = [
        target.deployment.api_key.as_ref(),
        target.deployment.aws.as_ref().map(|a| &a.secret_access_key),
        target.deployment.aws.as_ref().map(|a| &a.access_key_id),
        target
            .deployment
            .aws
            .as_ref()
            .and_then(|a| a.session_token.as_ref()),
    ];
    for secret in secrets.into_iter().flatten() {
        let secret = secret.expose();
        if secret.len() >= 8 && error.message.contains(secret) {
            error.message = error.message.replace(secret, "[redacted]");
        }
    }
    error
}

/// The events of one SSE stream, translated by `H` into one OpenAI chunk stream.
pub struct SseStream<H> {
    events: crate::sse::Events,
    handler: H,
    writer: ChunkWriter,
    provider: &'static str,
}

/// What a provider's SSE events mean.
pub trait EventHandler: Send {
    /// One event: `name` is its `event:` field, `data` its payload.
    fn event(
        &mut self,
        name: Option<&str>,
        data: &[u8],
        out: &mut ChunkWriter,
    ) -> Result<(), CallError>;

    /// The connection closed. By default that is fine only after the provider's last event
    /// (the handler called `out.end()`).
    fn eof(&mut self, out: &mut ChunkWriter, provider: &str) -> Result<(), CallError> {
        if out.has_ended() {
            Ok(())
        } else {
            Err(cut_short(provider))
        }
    }
}

/// Largest single event a provider may send (a whole tool call's arguments can be in one).
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

impl<H: EventHandler> SseStream<H> {
    pub fn new(handler: H, model: &str, provider: &'static str) -> Self {
        Self {
            events: crate::sse::Events::new(MAX_EVENT_BYTES),
            handler,
            writer: ChunkWriter::new(model),
            provider,
        }
    }

    fn decoded(&mut self, result: Result<(), EventError<CallError>>) -> Result<(), CallError> {
        result.map_err(|e| match e {
            EventError::TooLong => malformed(self.provider, "an event is too large"),
            EventError::Handler(e) => e,
        })
    }
}

impl<H: EventHandler> StreamTranslator for SseStream<H> {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CallError> {
        let (handler, writer) = (&mut self.handler, &mut self.writer);
        let result = self.events.push(bytes, |event| {
            if writer.has_ended() {
                return Ok(());
            }
            handler.event(event.name, event.data, writer)
        });
        out.extend_from_slice(&self.writer.take());
        self.decoded(result)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CallError> {
        let (handler, writer) = (&mut self.handler, &mut self.writer);
        let result = self.events.finish(|event| {
            if writer.has_ended() {
                return Ok(());
            }
            handler.event(event.name, event.data, writer)
        });
        self.decoded(result)?;
        let ended = self.handler.eof(&mut self.writer, self.provider);
        out.extend_from_slice(&self.writer.take());
        ended
    }
}
