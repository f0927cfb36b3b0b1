//! A streamed answer on its way to the client: the upstream SSE bytes pass through untouched
//! while an observer notes the time to the first chunk, reads the usage and assembles the answer
//! for the cache. The request is finished when the stream ends, however it ends: completion, an
//! upstream failure (passed on as an `Err` the front door turns into its own error event), or the
//! client going away (the stream is dropped).

use std::{future::Future, pin::Pin, sync::LazyLock};

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use memchr::memmem::Finder;
use serde::Deserialize;

use super::{Finish, ServedCall};
use crate::{
    cache::assemble::StreamAssembler,
    error::ApiError,
    provider::{CallError, Usage, native},
    request::NativeApi,
    sse::DataLines,
};

/// The client's side of a stream: the upstream bytes, or the error that cut it (the last item).
pub type Relay = BoxStream<'static, Result<Bytes, ApiError>>;

/// Outcome of a stream in which the provider itself sent an error event after content.
const UPSTREAM_ERROR_EVENT: &str = "upstream_error_event";
/// Outcome of a stream its client stopped reading before it ended.
const CLIENT_DISCONNECTED: &str = "client_disconnected";
/// A partial SSE line longer than this stops the usage scan (the bytes still pass through).
const MAX_LINE: usize = 1024 * 1024;

/// How a stream ended, for the finish step.
pub struct StreamEnd {
    /// `ok`, or the error code the stream ended with.
    pub outcome: &'static str,
    /// The provider's usage, when it arrived.
    pub usage: Option<Usage>,
    /// Bytes of generated text relayed to the client.
    pub generated_bytes: u64,
    /// The whole answer, assembled for the cache (only when the cache applies).
    pub assembled: Option<StreamAssembler>,
    /// The finish reasons the stream carried (read only when traces are exported).
    pub finish_reasons: Vec<String>,
}

/// Watches one stream and finishes its request when dropped.
struct Observer {
    finish: Option<Finish>,
    call: Option<ServedCall>,
    scanner: UsageScanner,
    assembler: Option<StreamAssembler>,
    outcome: Option<&'static str>,
}

/// Relays `upstream`, OpenAI SSE or (`native`) a client's own API's events.
pub(super) fn relay(
    upstream: BoxStream<'static, Result<Bytes, CallError>>,
    finish: Finish,
    call: ServedCall,
    native: Option<NativeApi>,
) -> Relay {
    let finish_reasons = finish.record.trace.is_some().then(Vec::new);
    let observer = Observer {
        assembler: (call.cache.is_some() && native.is_none()).then(StreamAssembler::default),
        finish: Some(finish),
        call: Some(call),
        scanner: UsageScanner {
            native,
            finish_reasons,
            ..UsageScanner::default()
        },
        outcome: None,
    };
    let ended = observer
        .finish
        .as_ref()
        .map(|finish| finish.sinks.ended.clone());
    // One wait for the whole stream: a new one per chunk would register and unregister a
    // waiter on the shutdown signal for every event.
    let grace: GraceOver = Box::pin(grace_over(ended));
    futures_util::stream::unfold(Some((upstream, observer, grace)), |state| async move {
        let (mut upstream, mut observer, mut grace) = state?;
        let next = tokio::select! {
            biased;
            () = &mut grace => {
                let shutting_down = ApiError::shutting_down();
                observer.outcome = Some(shutting_down.code);
                return Some((Err(shutting_down), None));
            }
            next = upstream.next() => next,
        };
        match next {
            Some(Ok(bytes)) => {
                observer.chunk(&bytes);
                Some((Ok(bytes), Some((upstream, observer, grace))))
            }
            Some(Err(error)) => {
                let interrupted = ApiError::stream_interrupted();
                tracing::warn!(
                    request_id = %observer.request_id(),
                    error = %error.message,
                    "upstream stream failed after the first byte"
                );
                observer.outcome = Some(interrupted.code);
                Some((Err(interrupted), None))
            }
            None => {
                observer.outcome = Some(if observer.scanner.saw_error {
                    UPSTREAM_ERROR_EVENT
                } else {
                    "ok"
                });
                None
            }
        }
    })
    .boxed()
}

type GraceOver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves when a shutdown's grace is over (never, for a relay without a shutdown signal).
async fn grace_over(ended: Option<tokio::sync::watch::Receiver<bool>>) {
    match ended {
        Some(mut ended) => {
            if ended.wait_for(|over| *over).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl Observer {
    fn chunk(&mut self, bytes: &[u8]) {
        if let (Some(finish), Some(call)) = (&mut self.finish, &self.call) {
            finish.first_byte(call);
        }
        self.scanner.feed(bytes);
        if let Some(assembler) = &mut self.assembler {
            assembler.feed(bytes);
        }
    }

    fn request_id(&self) -> &str {
        self.finish
            .as_ref()
            .map_or("", |finish| finish.record.request_id.as_str())
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let (Some(finish), Some(call)) = (self.finish.take(), self.call.take()) {
            finish.stream_ended(
                call,
                StreamEnd {
                    // Dropped before the upstream finished and without an upstream error.
                    outcome: self.outcome.unwrap_or(CLIENT_DISCONNECTED),
                    usage: self.scanner.usage,
                    generated_bytes: self.scanner.generated_bytes,
                    assembled: self.assembler.take(),
                    finish_reasons: self.scanner.finish_reasons.take().unwrap_or_default(),
                },
            );
        }
    }
}

/// Finds the `usage` object (and any error event) in OpenAI SSE `data:` lines, and counts the
/// generated text they carry; or the same in a client's own API's events (`native`).
struct UsageScanner {
    native: Option<NativeApi>,
    lines: DataLines,
    usage: Option<Usage>,
    generated_bytes: u64,
    /// The provider sent an error event (passed through as is; the SDKs raise on it).
    saw_error: bool,
    /// A line outgrew the cap: scanning stops (the bytes still pass through).
    overflowed: bool,
    /// The finish reasons seen, when traces are exported (OpenAI SSE only).
    finish_reasons: Option<Vec<String>>,
}

impl Default for UsageScanner {
    fn default() -> Self {
        Self {
            native: None,
            lines: DataLines::new(MAX_LINE),
            usage: None,
            generated_bytes: 0,
            saw_error: false,
            overflowed: false,
            finish_reasons: None,
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
        let native = self.native;
        let (usage, saw_error, generated, finish_reasons) = (
            &mut self.usage,
            &mut self.saw_error,
            &mut self.generated_bytes,
            &mut self.finish_reasons,
        );
        let scanned = self.lines.push(bytes, |data| match native {
            None => {
                if data.starts_with(b"{\"error\"") {
                    *saw_error = true;
                }
                *generated += generated_bytes(data, member_finders(None)) as u64;
                if let Some(reasons) = finish_reasons.as_mut() {
                    super::reasons::collect(data, reasons);
                }
                // Only chunks that mention usage are parsed; content chunks are skipped cheaply.
                if mentions_usage(data)
                    && let Ok(event) = serde_json::from_slice::<UsageEvent>(data)
                    && let Some(found) = event.usage
                {
                    *usage = Some(found);
                }
            }
            Some(api) => {
                *generated += generated_bytes(data, member_finders(native)) as u64;
                if mentions_usage(data) {
                    native::fold_event_usage(api, data, usage);
                } else if memchr::memmem::find(data, b"\"error\"").is_some()
                    && native::classify(api, data) == native::EventKind::Error
                {
                    *saw_error = true;
                }
            }
        });
        self.overflowed = scanned.is_err();
    }
}

/// The members of an OpenAI chunk whose string values are generated text.
const GENERATED: [&[u8]; 4] = [
    b"\"content\":\"",
    b"\"arguments\":\"",
    b"\"refusal\":\"",
    b"\"reasoning_content\":\"",
];

/// Searchers for the members that carry generated text, per API, built once: building one costs
/// more than searching a chunk with it.
fn member_finders(native: Option<NativeApi>) -> &'static [Finder<'static>] {
    fn finders(members: &[&'static [u8]]) -> Vec<Finder<'static>> {
        members.iter().map(|member| Finder::new(*member)).collect()
    }
    static OPENAI: LazyLock<Vec<Finder<'static>>> = LazyLock::new(|| finders(&GENERATED));
    static MESSAGES: LazyLock<Vec<Finder<'static>>> =
        LazyLock::new(|| finders(native::generated_members(NativeApi::Messages)));
    static RESPONSES: LazyLock<Vec<Finder<'static>>> =
        LazyLock::new(|| finders(native::generated_members(NativeApi::Responses)));
    match native {
        None => &OPENAI,
        Some(NativeApi::Messages) => &MESSAGES,
        Some(NativeApi::Responses) => &RESPONSES,
    }
}

/// Bytes of generated text in one chunk, escapes included (so it errs high): a scan for the
/// `members` that carry it, never a parse of the whole chunk.
fn generated_bytes(data: &[u8], members: &[Finder<'static>]) -> usize {
    let mut total = 0;
    for member in members {
        let mut rest = data;
        while let Some(at) = member.find(rest) {
            rest = &rest[at + member.needle().len()..];
            let len = string_len(rest);
            total += len;
            rest = &rest[len..];
        }
    }
    total
}

/// The length of a JSON string's body up to its closing quote (or the end).
fn string_len(text: &[u8]) -> usize {
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    text.len()
}

/// Whether an SSE `data:` payload names a `usage` member.
pub fn mentions_usage(data: &[u8]) -> bool {
    static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
    USAGE.find(data).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn generated_text_is_counted_from_content_arguments_and_refusals_only() {
        let chunks = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hello \\\"you\\\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\n",
        );
        let mut scanner = UsageScanner::default();
        scanner.feed(chunks.as_bytes());
        // `Hello \"you\"` is 13 bytes as sent, `{\"a\":1}` 9.
        assert_eq!(scanner.generated_bytes, 13 + 9);
    }
}
