//! OpenAI's streams end with `data: [DONE]`, or with an error event (`data: {"error": ...}`,
//! which the client sees as such). One passed through untouched is watched for either, so an
//! upstream (or a proxy in front of it) that closes cleanly mid-answer is a cut stream, never a
//! complete one. The bytes are not copied; only the few bytes around each chunk boundary are.

use std::sync::LazyLock;

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use memchr::memmem::Finder;

use super::{CallError, error::cut_short};

/// Long enough to hold `\ndata: [DONE]` split across two chunks.
const CARRY: usize = 16;

/// `stream`, failing at its end when `[DONE]` never came.
pub fn require_done(
    stream: BoxStream<'static, Result<Bytes, CallError>>,
    provider: &'static str,
) -> BoxStream<'static, Result<Bytes, CallError>> {
    let mut watch = DoneWatch::default();
    let watched = stream.map(move |item| {
        if let Ok(bytes) = &item {
            watch.push(bytes);
        }
        (item, watch.seen)
    });
    futures_util::stream::unfold(
        (watched.boxed(), false, false),
        move |(mut watched, seen, ended)| async move {
            if ended {
                return None;
            }
            match watched.next().await {
                Some((item, seen)) => Some((item, (watched, seen, false))),
                None if seen => None,
                None => Some((Err(cut_short(provider)), (watched, seen, true))),
            }
        },
    )
    .boxed()
}

/// Finds a `data: [DONE]` line (or `data:[DONE]`) at the start of a line. A JSON string cannot
/// hold a raw line break, so text that merely mentions `[DONE]` never matches. Bounded work per
/// chunk and no allocation: one scan of the chunk, plus one of the few bytes around its start.
struct DoneWatch {
    /// The end of the previous chunk (at first a line break: the stream's start counts as a line
    /// start), for a marker split across chunks.
    tail: [u8; CARRY],
    tail_len: usize,
    seen: bool,
}

impl Default for DoneWatch {
    fn default() -> Self {
        Self {
            tail: [b'\n'; CARRY],
            tail_len: 1,
            seen: false,
        }
    }
}

impl DoneWatch {
    fn push(&mut self, bytes: &[u8]) {
        if self.seen || bytes.is_empty() {
            return;
        }
        // The previous chunk's end joined to this one's start: where a split marker shows.
        let mut seam = [0u8; 2 * CARRY];
        let head = &bytes[..bytes.len().min(CARRY)];
        seam[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        seam[self.tail_len..self.tail_len + head.len()].copy_from_slice(head);
        let seam = &seam[..self.tail_len + head.len()];
        self.seen = contains_marker(seam) || contains_marker(bytes);
        let end = if bytes.len() >= CARRY { bytes } else { seam };
        let keep = &end[end.len().saturating_sub(CARRY)..];
        self.tail[..keep.len()].copy_from_slice(keep);
        self.tail_len = keep.len();
    }
}

/// The ends of an OpenAI stream, each at the start of a line.
const MARKERS: &[&[u8]] = &[
    b"\ndata: [DONE]",
    b"\ndata:[DONE]",
    b"\rdata: [DONE]",
    b"\rdata:[DONE]",
    b"\ndata: {\"error\"",
    b"\ndata:{\"error\"",
];

/// Whether a marker is in `bytes`: every `data:` found is checked in place.
fn contains_marker(bytes: &[u8]) -> bool {
    static DATA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"data:"));
    DATA.find_iter(bytes).any(|at| {
        at > 0
            && MARKERS
                .iter()
                .any(|marker| bytes[at - 1..].starts_with(marker))
    })
}

/// Whether one whole SSE line ends an OpenAI stream.
pub fn is_last_line(line: &[u8]) -> bool {
    let mut framed = Vec::with_capacity(line.len() + 1);
    framed.push(b'\n');
    framed.extend_from_slice(line.trim_ascii());
    MARKERS.iter().any(|marker| framed.starts_with(marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(stream: &[u8], split: usize) -> bool {
        let mut watch = DoneWatch::default();
        watch.push(&stream[..split]);
        watch.push(&stream[split..]);
        watch.seen
    }

    #[test]
    fn finds_done_wherever_the_chunks_split() {
        let complete = b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
        for split in 0..complete.len() {
            assert!(ended(complete, split), "split at {split}");
        }
        let first = b"data: [DONE]\n\n";
        for split in 0..first.len() {
            assert!(
                ended(first, split),
                "a stream that is only [DONE], split at {split}"
            );
        }
    }

    #[test]
    fn an_error_event_ends_a_stream_too() {
        assert!(ended(
            b"data: {\"x\":1}\n\ndata: {\"error\": {\"message\": \"m\"}}\n\n",
            20
        ));
        assert!(is_last_line(b"data: {\"error\":{}}\r\n"));
        assert!(is_last_line(b"data:[DONE]"));
        assert!(!is_last_line(b"data: {\"choices\":[]}"));
    }

    #[test]
    fn text_that_mentions_done_is_not_the_end() {
        let cut = b"data: {\"choices\":[{\"delta\":{\"content\":\"data: [DONE]\"}}]}\n\n";
        for split in 0..cut.len() {
            assert!(!ended(cut, split), "split at {split}");
        }
    }

    #[tokio::test]
    async fn a_stream_that_closes_before_done_fails() {
        let chunks = |parts: &[&'static [u8]]| {
            futures_util::stream::iter(
                parts
                    .iter()
                    .map(|p| Ok::<_, CallError>(Bytes::from_static(p)))
                    .collect::<Vec<_>>(),
            )
            .boxed()
        };
        let cut: Vec<_> = require_done(chunks(&[b"data: {\"a\":1}\n\n"]), "openai")
            .collect()
            .await;
        assert_eq!(cut.len(), 2);
        assert!(cut[0].is_ok());
        assert!(
            cut[1]
                .as_ref()
                .is_err_and(|e| e.message.contains("ended before"))
        );
        let whole: Vec<_> = require_done(
            chunks(&[b"data: {\"a\":1}\n\n", b"data: [DONE]\n\n"]),
            "openai",
        )
        .collect()
        .await;
        assert!(whole.iter().all(Result::is_ok) && whole.len() == 2);
    }
}
