//! Streaming answers: the upstream SSE bytes pass through untouched while an observer reads the
//! usage and the time to the first chunk. An upstream failure after the stream started ends it
//! with an OpenAI error event (never a clean-looking truncation). The decision is logged when the
//! stream ends, however it ends (completion, failure, or the client going away).

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde::Deserialize;
use tokio::time::Instant;

use super::{ResponseBody, spend::StreamBilling};
use crate::{
    cache::assemble::StreamAssembler,
    error::ApiError,
    provider::{CallError, Usage},
    route::signals::InFlight,
    sse::DataLines,
    telemetry::{DecisionLog, DecisionRecord, Metrics},
};

/// Outcome of a stream in which the provider itself sent an error event after content.
const UPSTREAM_ERROR_EVENT: &str = "upstream_error_event";

/// A partial SSE line longer than this stops the usage scan (the bytes still pass through).
const MAX_LINE: usize = 1024 * 1024;

/// Everything needed to log the decision when the stream ends.
pub struct StreamEnd {
    record: DecisionRecord,
    started: Instant,
    decisions: DecisionLog,
    metrics: Arc<Metrics>,
    scanner: UsageScanner,
    outcome: Option<&'static str>,
    /// The serving deployment's in-flight count, released when the stream ends.
    in_flight: InFlight,
    /// When the serving attempt started, for its time to first token.
    attempt_started: Instant,
    /// The call's budget ticket and price: settled when the stream ends with usage, released
    /// when it ends without.
    billing: Option<StreamBilling>,
    /// Set when the client did not ask for usage: the usage chunk the gateway asked for on its
    /// behalf is taken out of what it receives.
    usage_filter: Option<UsageFilter>,
    /// Assembles the answer for the cache while it streams, when the cache applies.
    assembler: Option<StreamAssembler>,
}

impl StreamEnd {
    pub fn new(
        record: DecisionRecord,
        started: Instant,
        decisions: DecisionLog,
        metrics: Arc<Metrics>,
        in_flight: InFlight,
        attempt_started: Instant,
        billing: StreamBilling,
    ) -> Self {
        Self {
            record,
            started,
            decisions,
            metrics,
            scanner: UsageScanner::default(),
            outcome: None,
            in_flight,
            attempt_started,
            usage_filter: (!billing.client_wants_usage).then(UsageFilter::default),
            assembler: billing.cache.as_ref().map(|_| StreamAssembler::default()),
            billing: Some(billing),
        }
    }

    fn chunk(&mut self, bytes: &[u8]) {
        if self.record.ttft_ms.is_none() {
            self.record.ttft_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
            let attempt_ttft = self.attempt_started.elapsed().as_secs_f64() * 1000.0;
            self.in_flight.signals().record_ttft(attempt_ttft);
        }
        self.scanner.feed(bytes);
        if let Some(assembler) = &mut self.assembler {
            assembler.feed(bytes);
        }
    }
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        // Dropped before the upstream finished and without an upstream error: the client left.
        let code = self.outcome.unwrap_or("client_disconnected");
        if code != "ok" {
            self.record.error_code = Some(code);
        }
        self.record.usage = self.scanner.usage;
        if let Some(usage) = self.scanner.usage {
            self.in_flight.signals().add_tokens(usage.total_tokens);
        }
        if let Some(billing) = self.billing.take() {
            // A stream that completed is stored; a cut or failed one never is.
            if let (Some((cache, key, ttl)), Some(assembler)) =
                (billing.cache.as_ref(), self.assembler.take())
                && code == "ok"
            {
                let stored = assembler
                    .finish()
                    .is_some_and(|answer| cache.put(*key, answer, *ttl));
                if !stored {
                    self.record.cache = Some("store-skipped");
                    self.metrics.cache("store-skipped");
                }
            }
            // A stream cut before its usage arrived has no known cost: its reservation is released.
            let usage = self.scanner.usage.filter(|_| code == "ok");
            if let Some(settle) = billing.charge.cost(
                billing.price,
                usage,
                &billing.group,
                &mut self.record,
                &self.metrics,
            ) {
                settle.in_background();
            }
        }
        self.record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.request(
            self.record.endpoint,
            code,
            self.started.elapsed().as_secs_f64(),
        );
        self.decisions.record(std::mem::take(&mut self.record));
    }
}

/// The client-facing body of a streamed answer.
pub fn observe(
    upstream: BoxStream<'static, Result<Bytes, CallError>>,
    end: StreamEnd,
) -> ResponseBody {
    let frames = futures_util::stream::unfold(Some((upstream, end)), |state| async move {
        let (mut upstream, mut end) = state?;
        loop {
            return match upstream.next().await {
                Some(Ok(bytes)) => {
                    end.chunk(&bytes);
                    let bytes = match &mut end.usage_filter {
                        Some(filter) => filter.push(&bytes),
                        None => bytes,
                    };
                    if bytes.is_empty() {
                        continue;
                    }
                    Some((
                        Ok::<_, Infallible>(Frame::data(bytes)),
                        Some((upstream, end)),
                    ))
                }
                Some(Err(error)) => {
                    tracing::warn!(request_id = %end.record.request_id, error = %error.message, "upstream stream failed after the first byte");
                    let interrupted = ApiError::stream_interrupted();
                    end.outcome = Some(interrupted.code);
                    Some((Ok(Frame::data(error_chunk(&interrupted))), None))
                }
                None => {
                    end.outcome = Some(if end.scanner.saw_error {
                        UPSTREAM_ERROR_EVENT
                    } else {
                        "ok"
                    });
                    let rest = end.usage_filter.as_mut().map(UsageFilter::finish);
                    match rest {
                        Some(rest) if !rest.is_empty() => Some((Ok(Frame::data(rest)), None)),
                        _ => None,
                    }
                }
            };
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Takes usage-only chunks (`"choices": []` with a `usage`) out of an SSE byte stream, line by
/// line; a removed `data:` line leaves an empty event, which SSE clients ignore. Other bytes
/// pass unchanged, held back only until their line ends.
#[derive(Default)]
struct UsageFilter {
    partial: Vec<u8>,
}

impl UsageFilter {
    fn push(&mut self, bytes: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(self.partial.len() + bytes.len());
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..=newline]);
            if !is_usage_only(&self.partial) {
                out.extend_from_slice(&self.partial);
            }
            self.partial.clear();
            rest = &rest[newline + 1..];
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            // Too long to be a usage chunk: let it through as it comes.
            out.append(&mut self.partial);
            out.extend_from_slice(rest);
        } else {
            self.partial.extend_from_slice(rest);
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.partial))
    }
}

fn is_usage_only(line: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    let Some(data) = line.trim_ascii().strip_prefix(b"data:") else {
        return false;
    };
    if !data.windows(7).any(|w| w == b"\"usage\"") {
        return false;
    }
    serde_json::from_slice::<Chunk>(data.trim_ascii())
        .is_ok_and(|chunk| chunk.choices.is_empty() && chunk.usage.is_some())
}

/// The last event of a stream that failed after content reached the client: a chunk whose
/// choice finishes with `error`, carrying the OpenAI error object (the SDKs raise on it).
fn error_chunk(error: &ApiError) -> Bytes {
    let body = error.body();
    let mut event = Vec::with_capacity(body.len() + 128);
    event.extend_from_slice(
        br#"data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"error"}],"#,
    );
    // `body` is `{"error":{...}}`: splice its member in after the choices.
    event.extend_from_slice(&body[1..]);
    event.extend_from_slice(
        b"

",
    );
    Bytes::from(event)
}

/// Finds the `usage` object (and any error event) in OpenAI SSE `data:` lines.
struct UsageScanner {
    lines: DataLines,
    usage: Option<Usage>,
    /// The provider sent an error event (passed through as is; the SDKs raise on it).
    saw_error: bool,
    /// A line outgrew the cap: scanning stops (the bytes still pass through).
    overflowed: bool,
}

impl Default for UsageScanner {
    fn default() -> Self {
        Self {
            lines: DataLines::new(MAX_LINE),
            usage: None,
            saw_error: false,
            overflowed: false,
        }
    }
}

#[derive(Deserialize)]
struct UsageEvent {
    #[serde(default)]
    usage: Option<Usage>,
}

impl UsageScanner {
    fn feed(&mut self, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        let (usage, saw_error) = (&mut self.usage, &mut self.saw_error);
        let scanned = self.lines.push(bytes, |data| {
            if data.starts_with(b"{\"error\"") {
                *saw_error = true;
            }
            // Only chunks that mention usage are parsed; content chunks are skipped cheaply.
            if memchr_usage(data)
                && let Ok(event) = serde_json::from_slice::<UsageEvent>(data)
                && let Some(found) = event.usage
            {
                *usage = Some(found);
            }
        });
        self.overflowed = scanned.is_err();
    }
}

fn memchr_usage(data: &[u8]) -> bool {
    data.windows(7).any(|w| w == b"\"usage\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_chunk_is_removed_however_the_stream_is_split() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\r\n\r\ndata: [DONE]\n\n";
        let expected = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\r\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut filter = UsageFilter::default();
            let mut out = filter.push(&stream[..split]).to_vec();
            out.extend_from_slice(&filter.push(&stream[split..]));
            out.extend_from_slice(&filter.finish());
            assert_eq!(out, expected, "split at {split}");
        }
    }

    #[test]
    fn finds_usage_split_across_chunks() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\r\n\r\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut scanner = UsageScanner::default();
            scanner.feed(&stream[..split]);
            scanner.feed(&stream[split..]);
            assert_eq!(
                scanner.usage,
                Some(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 5,
                    total_tokens: 8,
                    ..Usage::default()
                }),
                "split at {split}"
            );
        }
    }
}
