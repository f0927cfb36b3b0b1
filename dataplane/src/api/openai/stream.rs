//! OpenAI's framing of a relayed stream: the bytes as they come, the usage chunk taken out when
//! the client did not ask for it, and a failure after content as a final chunk whose choice
//! finishes with `error` and carries OpenAI's error object (the SDKs raise on it).

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde::Deserialize;

use crate::{
    error::ApiError,
    finish::{Relay, mentions_usage},
    server::ResponseBody,
};

/// A partial SSE line longer than this cannot be a usage chunk: it passes as it comes.
const MAX_LINE: usize = 1024 * 1024;

pub fn sse(relay: Relay, client_wants_usage: bool) -> ResponseBody {
    let filter = (!client_wants_usage).then(UsageFilter::default);
    let frames = futures_util::stream::unfold(Some((relay, filter)), |state| async move {
        let (mut relay, mut filter) = state?;
        loop {
            return match relay.next().await {
                Some(Ok(bytes)) => {
                    let bytes = match &mut filter {
                        Some(filter) => filter.push(bytes),
                        None => bytes,
                    };
                    if bytes.is_empty() {
                        continue;
                    }
                    Some((
                        Ok::<_, Infallible>(Frame::data(bytes)),
                        Some((relay, filter)),
                    ))
                }
                Some(Err(error)) => Some((Ok(Frame::data(error_chunk(&error))), None)),
                None => match filter.as_mut().map(UsageFilter::finish) {
                    Some(rest) if !rest.is_empty() => Some((Ok(Frame::data(rest)), None)),
                    _ => None,
                },
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
    fn push(&mut self, bytes: Bytes) -> Bytes {
        // The common chunk: whole lines, none of them usage. It passes without a copy.
        if self.partial.is_empty() && bytes.ends_with(b"\n") && !mentions_usage(&bytes) {
            return bytes;
        }
        let mut out = Vec::with_capacity(self.partial.len() + bytes.len());
        let mut rest = &bytes[..];
        while let Some(newline) = memchr::memchr(b'\n', rest) {
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
    if !mentions_usage(data) {
        return false;
    }
    serde_json::from_slice::<Chunk>(data.trim_ascii())
        .is_ok_and(|chunk| chunk.choices.is_empty() && chunk.usage.is_some())
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
            let mut filter = UsageFilter::default();
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
        let out = UsageFilter::default().push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }
}
