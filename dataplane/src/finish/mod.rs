//! The one place a request is finished, however it was answered: a complete answer, the end of
//! a stream (completed, failed, or abandoned by its client), a cache hit, or a refusal. Each
//! settles what the call cost, stores a cacheable answer, feeds the serving deployment's live
//! signals, writes the metrics and the decision record, and names what happened in the
//! `x-modelgate-*` headers. The front doors only put the answer into their own wire format.

mod bill;
mod reasons;
mod stream;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

pub use bill::{Bill, Pricer, Settle};
pub use stream::{Relay, StreamEnd, mentions_usage};

use crate::{
    cache::{self, Cache, CacheKey},
    catalog::usd,
    decision::{DecisionLog, DecisionRecord},
    error::ApiError,
    provider::{
        CallError, UpstreamBody, Usage,
        native::{NativeAnswer, NativeBody},
    },
    request::{CACHE_HEADER, Endpoint},
    resilience::calls_made,
    signals::InFlight,
    telemetry::{Attempt, Finished, Metrics, Otel},
};

// Names built at compile time: a `&'static str` name is copied into a new allocation on every
// insert.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-modelgate-request-id");
const ROUTED_MODEL: HeaderName = HeaderName::from_static("x-modelgate-routed-model");
const PROVIDER: HeaderName = HeaderName::from_static("x-modelgate-provider");
const DEPLOYMENT: HeaderName = HeaderName::from_static("x-modelgate-deployment");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-modelgate-attempts");
const COST: HeaderName = HeaderName::from_static("x-modelgate-cost");
const CACHE: HeaderName = HeaderName::from_static(CACHE_HEADER);

/// Where finished requests go: shared by every request, cheap to clone.
#[derive(Clone)]
pub struct Sinks {
    pub metrics: Arc<Metrics>,
    pub decisions: DecisionLog,
    pub cache: Arc<Cache>,
    /// Flips when a shutdown's grace is over: open streams then end with an explicit error.
    pub ended: tokio::sync::watch::Receiver<bool>,
    /// Spans and GenAI metrics over OTLP, when an endpoint is configured.
    pub otel: Option<Arc<Otel>>,
}

/// A request on its way through the pipeline: its decision record, which the stages fill in,
/// and when it arrived.
pub struct Finish {
    pub record: DecisionRecord,
    endpoint: Endpoint,
    started: Instant,
    /// The same moment on the wall clock, for the request's span.
    started_at: SystemTime,
    sinks: Sinks,
}

/// A call a deployment answered, with what finishing it needs.
pub struct ServedCall {
    pub bill: Bill,
    pub provider: &'static str,
    /// The serving group's and deployment's names, as header values made with the config.
    pub routed_model: Option<HeaderValue>,
    pub deployment: Option<HeaderValue>,
    /// Counts the call as in flight until dropped.
    pub in_flight: InFlight,
    /// When the serving attempt started, for its time to first token.
    pub attempt_started: Instant,
    /// The cache entry the answer is stored under, when the cache applies.
    pub cache: Option<(CacheKey, Duration)>,
}

/// A stored answer served from the cache.
pub struct Hit {
    /// The ModelGroup the request resolved to, as a header value made with the config.
    pub routed_model: Option<HeaderValue>,
    pub body: Bytes,
    /// Whether the client asked for a stream (and then for the usage chunk).
    pub stream: bool,
    pub client_wants_usage: bool,
}

/// What the stages of the pipeline came to.
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived value per request, moved once; boxing would add an allocation"
)]
pub enum Outcome {
    Served {
        call: ServedCall,
        body: UpstreamBody,
        client_wants_usage: bool,
    },
    Hit(Hit),
}

/// A request the pipeline refused, with the headers that explain it.
pub struct Refused {
    pub error: ApiError,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            headers: Vec::new(),
        }
    }
}

/// The answer, for a front door to put in its wire format.
pub struct Answer {
    pub headers: HeaderMap,
    pub body: AnswerBody,
}

pub enum AnswerBody {
    /// A complete answer in OpenAI's shape.
    Complete(Bytes),
    /// A stored complete answer for a client that asked for a stream: replayed as one.
    Replay {
        body: Bytes,
        client_wants_usage: bool,
    },
    /// A live stream of OpenAI SSE bytes. The gateway always asks the provider for usage; a
    /// client that did not ask has the usage chunk taken out, one that did finds its cost in it
    /// (priced by `pricer`).
    Stream {
        relay: Relay,
        client_wants_usage: bool,
        pricer: Pricer,
    },
    /// A complete answer in the client's own API, from a provider that speaks it: passed on as
    /// it is.
    NativeComplete(Bytes),
    /// A stream in the client's own API: its bytes passed on as they are.
    NativeStream(Relay),
}

/// A refusal, for a front door to put in its wire format.
pub struct Rejected {
    pub error: ApiError,
    pub headers: HeaderMap,
}

impl Finish {
    pub fn start(sinks: &Sinks, endpoint: Endpoint) -> Self {
        Self {
            record: DecisionRecord {
                request_id: request_id(),
                timestamp: jiff::Timestamp::now(),
                endpoint: endpoint.as_str(),
                strategy: "none",
                ..DecisionRecord::default()
            },
            endpoint,
            started: Instant::now(),
            started_at: SystemTime::now(),
            sinks: sinks.clone(),
        }
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Finishes the request with what its stages came to.
    pub async fn answer(self, outcome: Result<Outcome, Refused>) -> Result<Answer, Rejected> {
        match outcome {
            Ok(Outcome::Served {
                call,
                body: UpstreamBody::Complete { body, usage },
                ..
            }) => Ok(self.complete(call, body, usage).await),
            Ok(Outcome::Served {
                call,
                body: UpstreamBody::Stream(upstream),
                client_wants_usage,
            }) => Ok(self.stream(call, upstream, client_wants_usage)),
            Ok(Outcome::Served {
                call,
                body: UpstreamBody::Native(answer),
                ..
            }) => Ok(self.native(call, answer).await),
            Ok(Outcome::Hit(hit)) => Ok(self.hit(hit)),
            Err(refused) => Err(self.rejected(refused)),
        }
    }

    /// An answer in the client's own API: billed, signalled and logged like any other, never
    /// stored (the cache holds chat completions, which every front door can put in its shape).
    async fn native(mut self, mut call: ServedCall, answer: NativeAnswer) -> Answer {
        if call.cache.take().is_some() {
            self.store_skipped();
        }
        match answer.body {
            NativeBody::Complete { body, usage } => {
                let mut answer = self.complete(call, body, usage).await;
                if let AnswerBody::Complete(body) = answer.body {
                    answer.body = AnswerBody::NativeComplete(body);
                }
                answer
            }
            NativeBody::Stream(upstream) => {
                let mut headers = self.served_headers(&call);
                self.cache_header(&mut headers);
                self.record.status = http::StatusCode::OK.as_u16();
                Answer {
                    headers,
                    body: AnswerBody::NativeStream(stream::relay(
                        upstream,
                        self,
                        call,
                        Some(answer.api),
                    )),
                }
            }
        }
    }

    async fn complete(mut self, call: ServedCall, body: Bytes, usage: Option<Usage>) -> Answer {
        let mut headers = self.served_headers(&call);
        self.record.usage = usage;
        if self.record.trace.is_some() {
            reasons::collect(&body, &mut self.record.finish_reasons);
        }
        if let Some(settle) = call.bill.cost(usage, &mut self.record) {
            insert(&mut headers, COST, &format!("{:.9}", usd(settle.cost)));
            settle.now().await;
        }
        let signals = call.in_flight.signals();
        let latency_ms = call.attempt_started.elapsed().as_secs_f64() * 1000.0;
        let output_tokens = usage.map_or(0, |u| u.completion_tokens).max(1);
        signals.record_per_token(latency_ms / output_tokens as f64);
        if let Some(usage) = usage {
            signals.add_tokens(usage.total_tokens);
        }
        if let Some((key, ttl)) = call.cache
            && !(cache::storable(self.endpoint, &body)
                && self.sinks.cache.put(key, body.clone(), ttl))
        {
            self.store_skipped();
        }
        self.cache_header(&mut headers);
        self.log("ok", http::StatusCode::OK);
        Answer {
            headers,
            body: AnswerBody::Complete(body),
        }
    }

    fn stream(
        mut self,
        call: ServedCall,
        upstream: futures_util::stream::BoxStream<'static, Result<Bytes, CallError>>,
        client_wants_usage: bool,
    ) -> Answer {
        let mut headers = self.served_headers(&call);
        self.cache_header(&mut headers);
        self.record.status = http::StatusCode::OK.as_u16();
        let pricer = call.bill.pricer();
        Answer {
            headers,
            body: AnswerBody::Stream {
                relay: stream::relay(upstream, self, call, None),
                client_wants_usage,
                pricer,
            },
        }
    }

    /// The stream's first chunk reached the client.
    fn first_byte(&mut self, call: &ServedCall) {
        if self.record.ttft_ms.is_none() {
            self.record.ttft_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
            let attempt_ttft = call.attempt_started.elapsed().as_secs_f64() * 1000.0;
            call.in_flight.signals().record_ttft(attempt_ttft);
        }
    }

    fn stream_ended(mut self, call: ServedCall, mut end: StreamEnd) {
        let ok = end.outcome == "ok";
        if !ok {
            self.record.error_code = Some(end.outcome);
        }
        self.record.usage = end.usage;
        self.record.finish_reasons = std::mem::take(&mut end.finish_reasons);
        if let Some(usage) = end.usage {
            call.in_flight.signals().add_tokens(usage.total_tokens);
        }
        let usage = self.billed_usage(&call, &end);
        // A stream that completed is stored; a cut or failed one never is.
        if let (Some((key, ttl)), Some(assembler)) = (call.cache, end.assembled)
            && ok
        {
            let stored = assembler
                .finish()
                .is_some_and(|answer| self.sinks.cache.put(key, answer, ttl));
            if !stored {
                self.store_skipped();
            }
        }
        if let Some(settle) = call.bill.cost(usage, &mut self.record) {
            settle.in_background();
        }
        let status = http::StatusCode::OK;
        self.log(end.outcome, status);
    }

    /// What a stream is billed for, however it ended: the provider's usage when it arrived;
    /// otherwise, when text reached the client, the prompt estimate plus the text relayed at
    /// three bytes a token (most tokens are longer, so it errs high); otherwise nothing (the
    /// reservation is released).
    fn billed_usage(&mut self, call: &ServedCall, end: &StreamEnd) -> Option<Usage> {
        if end.usage.is_some() {
            return end.usage;
        }
        if end.generated_bytes == 0 {
            return None;
        }
        let completion_tokens = end.generated_bytes.div_ceil(3);
        let estimate = Usage {
            prompt_tokens: call.bill.prompt_tokens,
            completion_tokens,
            total_tokens: call.bill.prompt_tokens + completion_tokens,
            ..Usage::default()
        };
        self.record.usage = Some(estimate);
        self.record.usage_estimated = true;
        Some(estimate)
    }

    fn hit(mut self, hit: Hit) -> Answer {
        let mut headers = HeaderMap::new();
        insert(&mut headers, REQUEST_ID, &self.record.request_id);
        insert_shared(&mut headers, ROUTED_MODEL, hit.routed_model);
        headers.insert(CACHE, HeaderValue::from_static("hit"));
        headers.insert(COST, HeaderValue::from_static("0.000000000"));
        headers.insert(ATTEMPTS, HeaderValue::from_static("0"));
        self.record.cost_usd = Some(0.0);
        self.log("ok", http::StatusCode::OK);
        let body = if hit.stream {
            AnswerBody::Replay {
                body: hit.body,
                client_wants_usage: hit.client_wants_usage,
            }
        } else {
            AnswerBody::Complete(hit.body)
        };
        Answer { headers, body }
    }

    fn rejected(mut self, refused: Refused) -> Rejected {
        let mut headers = HeaderMap::new();
        insert(&mut headers, REQUEST_ID, &self.record.request_id);
        headers.extend(refused.headers);
        self.cache_header(&mut headers);
        self.record.error_code = Some(refused.error.code);
        self.log(refused.error.code, refused.error.status);
        Rejected {
            error: refused.error,
            headers,
        }
    }

    /// Who served the call.
    fn served_headers(&self, call: &ServedCall) -> HeaderMap {
        let mut headers = HeaderMap::new();
        insert(&mut headers, REQUEST_ID, &self.record.request_id);
        insert_shared(&mut headers, ROUTED_MODEL, call.routed_model.clone());
        // A provider's name is a constant of the code: shared, not copied.
        if let Ok(provider) =
            HeaderValue::from_maybe_shared(Bytes::from_static(call.provider.as_bytes()))
        {
            headers.insert(PROVIDER, provider);
        }
        insert_shared(&mut headers, DEPLOYMENT, call.deployment.clone());
        headers.insert(ATTEMPTS, count_value(calls_made(&self.record.attempts)));
        headers
    }

    fn cache_header(&self, headers: &mut HeaderMap) {
        if let Some(result) = self.record.cache {
            headers.insert(CACHE, HeaderValue::from_static(result));
        }
    }

    fn store_skipped(&mut self) {
        self.record.cache = Some("store-skipped");
        self.sinks.metrics.cache("store-skipped");
    }

    /// The metrics, the spans and the decision record of the finished request.
    fn log(mut self, code: &'static str, status: http::StatusCode) {
        let elapsed = self.started.elapsed();
        self.record.status = status.as_u16();
        self.record.latency_ms = elapsed.as_secs_f64() * 1000.0;
        let record = &self.record;
        let attempts: Vec<Attempt<'_>> = record
            .attempts
            .iter()
            .map(|a| Attempt {
                deployment: &a.deployment,
                outcome: a.outcome,
                status: a.status,
                latency_ms: a.latency_ms,
                span: a.span.as_ref(),
            })
            .collect();
        let served = record
            .attempts
            .iter()
            .rfind(|a| a.outcome == "ok")
            .or(record.attempts.last());
        let usage = record.usage.unwrap_or_default();
        let finished = Finished {
            endpoint: record.endpoint,
            request_model: record.model.as_deref().unwrap_or_default(),
            group: record.group.as_ref(),
            provider: served.map_or(
                if record.cache == Some("hit") {
                    "cache"
                } else {
                    "none"
                },
                |a| a.provider,
            ),
            deployment: served.map(|a| &a.deployment),
            status: record.status,
            error_code: record.error_code,
            started_at: self.started_at,
            seconds: elapsed.as_secs_f64(),
            ttft_seconds: record.ttft_ms.map(|ms| ms / 1000.0),
            key: record.key_id.as_ref(),
            org: record.org.as_ref(),
            team: record.team.as_ref(),
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cost_usd: record.cost_usd,
            spend_tags: &record.spend_tags,
            attempts: &attempts,
            strategy: record.strategy,
            cache: record.cache,
            stream: record.stream,
            finish_reasons: &record.finish_reasons,
            trace: record.trace.as_ref(),
        };
        self.sinks.metrics.request(code, &finished);
        if let Some(otel) = &self.sinks.otel {
            otel.record(&finished);
        }
        self.sinks.decisions.record(self.record);
    }
}

/// `req_` and 32 random hex digits, written into one allocation of the final size.
fn request_id() -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(36);
    // Writing into a String cannot fail.
    let _ = write!(id, "req_{:032x}", fastrand::u128(..));
    id
}

/// Sets a header whose value the config made, when it made one.
fn insert_shared(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    if let Some(value) = value {
        headers.insert(name, value);
    }
}

/// A count as a header value; the usual small ones are static.
fn count_value(count: usize) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    SMALL
        .get(count)
        .map_or_else(|| HeaderValue::from(count), |n| HeaderValue::from_static(n))
}

/// Sets a header whose value came from config or the gateway (never fails in practice; a value
/// that is not a valid header is left out rather than failing the answer).
fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
