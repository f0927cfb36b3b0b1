//! The streaming contract's first half: a streamed answer is read until its first content token
//! before the client sees anything. Until then a failure (an SSE error event, a broken or
//! stalled stream, a stream with no content) is an attempt failure and the executor moves on;
//! the client never learns it happened.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::{
    provider::{
        CallError, CallErrorKind,
        native::{self, EventKind},
    },
    request::NativeApi,
    sse::DataLines,
};

type ByteStream = BoxStream<'static, Result<Bytes, CallError>>;

/// Bytes read before the first content token are kept this far, no further.
const MAX_PRIMED_BYTES: usize = 1024 * 1024;

/// Reads `stream` until an event carries content (text, a tool call, a refusal or a finish
/// reason) or `[DONE]`; returns the stream with the bytes read so far put back in front. A
/// stream in a client's own API (`native`) is read by that API's events.
pub async fn until_first_content(
    mut stream: ByteStream,
    native: Option<NativeApi>,
    deadline: Duration,
) -> Result<ByteStream, CallError> {
    let mut read: Vec<Bytes> = Vec::new();
    let mut lines = DataLines::new(MAX_PRIMED_BYTES);
    let primed = tokio::time::timeout(deadline, async {
        loop {
            let chunk = match stream.next().await {
                Some(chunk) => chunk?,
                None => {
                    return Err(CallError::new(
                        CallErrorKind::Protocol,
                        "the stream ended before any content",
                    ));
                }
            };
            // The first event that is not preamble decides.
            let mut verdict = Event::Preamble;
            lines
                .push(&chunk, |data| {
                    if verdict == Event::Preamble {
                        verdict = match native {
                            None => classify(data),
                            Some(api) => match native::classify(api, data) {
                                EventKind::Content => Event::Content,
                                EventKind::Error => Event::Error,
                                EventKind::Preamble => Event::Preamble,
                            },
                        };
                    }
                })
                .map_err(|_| {
                    CallError::new(
                        CallErrorKind::Protocol,
                        "an event before the first content is too large",
                    )
                })?;
            read.push(chunk);
            match verdict {
                Event::Content => return Ok(()),
                Event::Error => {
                    return Err(CallError::new(
                        CallErrorKind::Protocol,
                        "the provider sent an error event before any content",
                    ));
                }
                Event::Preamble => {}
            }
        }
    })
    .await
    .map_err(|_| {
        CallError::new(
            CallErrorKind::Timeout,
            "no content within the first-byte timeout",
        )
    })?;
    primed?;
    Ok(futures_util::stream::iter(read.into_iter().map(Ok))
        .chain(stream)
        .boxed())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Something the client should see: the stream is committed.
    Content,
    /// An error in place of an answer.
    Error,
    /// Role announcements, empty deltas, comments: nothing yet.
    Preamble,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default)]
    refusal: Option<String>,
}

fn classify(data: &[u8]) -> Event {
    if data == b"[DONE]" {
        return Event::Content;
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
        return Event::Error;
    };
    if chunk.error.is_some() {
        return Event::Error;
    }
    let has_content = chunk.choices.iter().any(|c| {
        c.finish_reason.is_some()
            || c.delta.as_ref().is_some_and(|d| {
                d.content.as_deref().is_some_and(|t| !t.is_empty())
                    || d.tool_calls.is_some()
                    || d.refusal.as_deref().is_some_and(|t| !t.is_empty())
            })
    });
    if has_content {
        Event::Content
    } else {
        Event::Preamble
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn until_first_content_of(
        stream: ByteStream,
        deadline: Duration,
    ) -> Result<ByteStream, CallError> {
        until_first_content(stream, None, deadline).await
    }

    fn stream_of(parts: &[&str]) -> ByteStream {
        let chunks: Vec<Result<Bytes, CallError>> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p.as_bytes())))
            .collect();
        futures_util::stream::iter(chunks).boxed()
    }

    async fn collect(stream: ByteStream) -> String {
        let parts: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
        parts
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    const ROLE: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    const HELLO: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n";

    #[tokio::test]
    async fn content_commits_and_nothing_is_lost() {
        // The content event is split across chunks.
        let parts = [ROLE, &HELLO[..20], &HELLO[20..], "data: [DONE]\n\n"];
        let primed = until_first_content_of(stream_of(&parts), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(collect(primed).await, parts.concat());
    }

    #[tokio::test]
    async fn an_error_or_an_empty_end_before_content_is_an_attempt_failure() {
        let error = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        let failed =
            until_first_content_of(stream_of(&[ROLE, error]), Duration::from_secs(5)).await;
        assert_eq!(failed.err().map(|e| e.kind), Some(CallErrorKind::Protocol));
        let empty = until_first_content_of(stream_of(&[ROLE]), Duration::from_secs(5)).await;
        assert_eq!(empty.err().map(|e| e.kind), Some(CallErrorKind::Protocol));
    }

    #[tokio::test]
    async fn tool_calls_and_finish_reasons_count_as_content() {
        let tool =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n";
        assert!(
            until_first_content_of(stream_of(&[tool]), Duration::from_secs(5))
                .await
                .is_ok()
        );
        let finish =
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert!(
            until_first_content_of(stream_of(&[finish]), Duration::from_secs(5))
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_stalls_before_content_times_out() {
        let stalled = futures_util::stream::iter([Ok(Bytes::from_static(ROLE.as_bytes()))])
            .chain(futures_util::stream::pending())
            .boxed();
        let failed = until_first_content_of(stalled, Duration::from_secs(30)).await;
        assert_eq!(failed.err().map(|e| e.kind), Some(CallErrorKind::Timeout));
    }
}
