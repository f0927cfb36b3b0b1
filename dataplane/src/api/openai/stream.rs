//! OpenAI's framing of a relayed stream: the bytes as they come; the usage chunk taken out when
//! the client did not ask for it, and given its cost (`"modelgate": {"cost_usd": ...}`) when it
//! did; and a failure after content as a final chunk whose choice finishes with `error` and
//! carries OpenAI's error object (the SDKs raise on it).

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::{
    catalog::usd,
    error::ApiError,
    finish::{Pricer, Relay, mentions_usage},
    provider::Usage,
    server::{self, ResponseBody},
};

/// A partial SSE line longer than this cannot be a usage chunk: it passes as it comes.
const MAX_LINE: usize = 1024 * 1024;

pub fn sse(relay: Relay, client_wants_usage: bool, pricer: Pricer) -> ResponseBody {
    let usage_chunks = UsageChunks {
        partial: Vec::new(),
        priced: client_wants_usage.then_some(pricer),
    };
    let frames = futures_util::stream::unfold(Some((relay, usage_chunks)), |state| async move {
        let (mut relay, mut usage_chunks) = state?;
        // Empty chunks (a held partial line, a removed usage chunk) are dropped by the body.
        match relay.next().await {
            Some(Ok(bytes)) => Some((usage_chunks.push(bytes), Some((relay, usage_chunks)))),
            Some(Err(error)) => Some((error_chunk(&error), None)),
            None => Some((usage_chunks.finish(), None)),
        }
    });
    server::streamed(frames)
}

/// Finds usage-only chunks (`"choices": []` with a `usage`) in an SSE byte stream, line by line,
/// and takes them out (`priced` is `None`: a removed `data:` line leaves an empty event, which
/// SSE clients ignore) or adds their cost. Other bytes pass unchanged, held back only until their
/// line ends.
struct UsageChunks {
    partial: Vec<u8>,
    priced: Option<Pricer>,
}

impl UsageChunks {
    fn push(&mut self, bytes: Bytes) -> Bytes {
        // The common chunk: whole lines, none of them usage. It passes without a copy.
        if self.partial.is_empty() && bytes.ends_with(b"\n") && !mentions_usage(&bytes) {
            return bytes;
        }
        let mut out = Vec::with_capacity(self.partial.len() + bytes.len() + 48);
        let mut rest = &bytes[..];
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            self.partial.extend_from_slice(&rest[..=newline]);
            match (usage_only(&self.partial), self.priced) {
                (None, _) => out.extend_from_slice(&self.partial),
                (Some(_), None) => {}
                (Some(usage), Some(pricer)) => with_cost(&self.partial, &usage, pricer, &mut out),
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

/// The usage of a usage-only `data:` line.
fn usage_only(line: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        usage: Option<Usage>,
    }
    let data = line.trim_ascii().strip_prefix(b"data:")?;
    if !mentions_usage(data) {
        return None;
    }
    serde_json::from_slice::<Chunk>(data.trim_ascii())
        .ok()
        .filter(|chunk| chunk.choices.is_empty())
        .and_then(|chunk| chunk.usage)
}

/// `line` (a usage-only `data:` line, a JSON object) with the cost member added as its last.
fn with_cost(line: &[u8], usage: &Usage, pricer: Pricer, out: &mut Vec<u8>) {
    let Some(close) = line.iter().rposition(|b| *b == b'}') else {
        out.extend_from_slice(line);
        return;
    };
    out.extend_from_slice(&line[..close]);
    let cost = serde_json::json!({
        "cost_usd": usd(pricer.nanos(usage)),
        "price_source": pricer.source(),
    });
    out.extend_from_slice(b",\"modelgate\":");
    // Serializing a JSON value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &cost);
    out.extend_from_slice(&line[close..]);
}

/// The last event of a stream that failed after content reached the client.
fn error_chunk(error: &ApiError) -> Bytes {
    let body = error.body();
    let mut event = Vec::with_capacity(body.len() + 128);
    event.extend_from_slice(
        br#"data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"error"}],"#,
    );
    // `body` is `{"error":{...}}`: splice its member in after the choices.
    event.extend_from_slice(&body[1..]);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_chunk_is_removed_however_the_stream_is_split() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\r\n\r\ndata: [DONE]\n\n";
        let expected = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\r\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut filter = UsageChunks {
                partial: Vec::new(),
                priced: None,
            };
            let mut out = filter
                .push(Bytes::copy_from_slice(&stream[..split]))
                .to_vec();
            out.extend_from_slice(&filter.push(Bytes::copy_from_slice(&stream[split..])));
            out.extend_from_slice(&filter.finish());
            assert_eq!(out, expected, "split at {split}");
        }
    }

    #[test]
    fn a_chunk_of_whole_content_lines_passes_without_a_copy() {
        let chunk =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
        let out = UsageChunks {
            partial: Vec::new(),
            priced: None,
        }
        .push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }
}
