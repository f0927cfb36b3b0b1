//! `streamGenerateContent?alt=sse`, translated: every SSE event is a whole
//! `GenerateContentResponse` holding only the new parts. There is no closing sentinel: the chunk
//! with `finishReason` is the last one that matters, and the stream is complete when the
//! connection closes after it. Function calls come whole, each one OpenAI delta.
//!
//! An error after the stream began arrives as `data: {"error": ...}`, or, as the official SDK
//! guards against, as a bare JSON object over several lines without `data:` framing. The SSE
//! decoder skips such lines, so they are gathered here on the side until the object's braces
//! balance (the SDK's way), and then read.

use super::{
    error::{self, ErrorEnvelope},
    response::{self, GenerateContentResponse},
};
use crate::provider::{
    CallError,
    output::ChunkWriter,
    translated::{EventHandler, SseStream, StreamTranslator, cut_short, malformed},
    transport::MAX_ERROR_BYTES,
};

/// The translator for one streamed answer.
pub fn translator(provider: &'static str, model: &str) -> Box<dyn StreamTranslator> {
    Box::new(GeminiStream {
        events: SseStream::new(Chunks { provider }, model, provider),
        unframed: Unframed::default(),
        provider,
    })
}

struct GeminiStream {
    events: SseStream<Chunks>,
    unframed: Unframed,
    provider: &'static str,
}

impl StreamTranslator for GeminiStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CallError> {
        self.events.feed(bytes, out)?;
        match self.unframed.push(bytes) {
            Ok(None) => Ok(()),
            Ok(Some(rpc)) => Err(error::in_stream(self.provider, rpc)),
            Err(TooLong) => Err(malformed(
                self.provider,
                "unframed text in the stream is too long",
            )),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CallError> {
        if let Ok(Some(rpc)) = self.unframed.push(b"\n") {
            return Err(error::in_stream(self.provider, rpc));
        }
        self.events.finish(out)
    }
}

/// What each SSE event means.
struct Chunks {
    provider: &'static str,
}

impl EventHandler for Chunks {
    fn event(
        &mut self,
        _name: Option<&str>,
        data: &[u8],
        out: &mut ChunkWriter,
    ) -> Result<(), CallError> {
        let chunk: GenerateContentResponse = serde_json::from_slice(data).map_err(|e| {
            malformed(
                self.provider,
                format!("a stream chunk is not a GenerateContentResponse: {e}"),
            )
        })?;
        if let Some(rpc) = chunk.error {
            return Err(error::in_stream(self.provider, rpc));
        }
        response::refuse_blocked_prompt(self.provider, &chunk)?;
        if let Some(meta) = &chunk.usage_metadata {
            // Every chunk repeats the counts so far; the last one has the totals.
            *out.usage_mut() = response::usage(meta);
        }
        // Streams carry one candidate (`n` > 1 is refused for them).
        for candidate in chunk
            .candidates
            .iter()
            .filter(|c| c.index.unwrap_or(0) == 0)
        {
            for part in candidate.content.iter().flat_map(|c| &c.parts) {
                if let Some(text) = part.answer_text() {
                    out.text(text);
                }
                if let Some(call) = part.tool_call() {
                    out.tool_call(&call.id, &call.name, &call.arguments);
                }
            }
            if let Some(reason) = &candidate.finish_reason {
                out.finish(response::finish_reason(reason));
            }
        }
        Ok(())
    }

    /// Gemini has no closing event: a stream is whole when it closes after a finish reason.
    fn eof(&mut self, out: &mut ChunkWriter, provider: &str) -> Result<(), CallError> {
        if out.has_finished() {
            out.end();
            Ok(())
        } else {
            Err(cut_short(provider))
        }
    }
}

/// Lines outside the SSE framing, gathered until they make up an error object. A line is
/// recognised as an SSE line by its first bytes and then skipped, not copied (one may hold a
/// whole tool call); only unframed text is kept, and only that counts against the cap.
/// Unframed lines are gathered from one that opens an object until its braces balance; then
/// the object is read, and dropped if it is no error, as is a stray line that opens none, so
/// neither keeps a later error from being read.
#[derive(Default)]
struct Unframed {
    /// The current line: its first bytes while it may be an SSE line, all of it once it is not.
    line: Vec<u8>,
    /// The current line is an SSE line: skipped to its end.
    skipping: bool,
    /// The lines of the object being gathered.
    gathered: Vec<u8>,
    /// Open braces in `gathered`.
    depth: i64,
}

struct TooLong;

/// Enough of a line to see whether it is an SSE field (`retry:` is the longest name).
const FIELD_PREFIX: usize = 8;

impl Unframed {
    fn push(&mut self, bytes: &[u8]) -> Result<Option<error::RpcStatus>, TooLong> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let newline = rest.iter().position(|&b| b == b'\n');
            let piece = &rest[..newline.unwrap_or(rest.len())];
            rest = &rest[newline.map_or(rest.len(), |i| i + 1)..];
            if !self.skipping {
                self.take(piece)?;
            }
            if newline.is_some() {
                let found = if self.skipping {
                    None
                } else {
                    let line = std::mem::take(&mut self.line);
                    let found = self.line_complete(line.trim_ascii());
                    self.line = line;
                    self.line.clear();
                    found
                };
                self.skipping = false;
                if found.is_some() {
                    return Ok(found);
                }
            }
        }
        Ok(None)
    }

    /// Adds `piece` to the current line: first only as much as tells an SSE line apart, the
    /// rest only once the line is known to be unframed.
    fn take(&mut self, piece: &[u8]) -> Result<(), TooLong> {
        let mut piece = piece;
        if self.line.len() < FIELD_PREFIX {
            let head = piece.len().min(FIELD_PREFIX - self.line.len());
            self.line.extend_from_slice(&piece[..head]);
            piece = &piece[head..];
            if self.line.len() < FIELD_PREFIX {
                return Ok(());
            }
            if is_framed(&self.line) {
                self.skipping = true;
                self.line.clear();
                return Ok(());
            }
        }
        if self.line.len() + piece.len() + self.gathered.len() > MAX_ERROR_BYTES {
            return Err(TooLong);
        }
        self.line.extend_from_slice(piece);
        Ok(())
    }

    fn line_complete(&mut self, line: &[u8]) -> Option<error::RpcStatus> {
        if is_framed(line) {
            return None;
        }
        // A JSON array stream (no `alt=sse`) wraps the object in `[`, `]` and commas.
        if self.gathered.is_empty() && !line.trim_ascii_start_matches(b"[,").starts_with(b"{") {
            return None;
        }
        self.gathered.extend_from_slice(line);
        self.gathered.push(b'\n');
        self.depth += brace_balance(line);
        if self.depth > 0 {
            return None;
        }
        let candidate = self
            .gathered
            .trim_ascii()
            .trim_ascii_start_matches(b"[,")
            .trim_ascii_end_matches(b"],");
        let found = serde_json::from_slice::<ErrorEnvelope>(candidate)
            .ok()
            .map(|envelope| envelope.error);
        self.gathered.clear();
        self.depth = 0;
        found
    }
}

/// Braces opened minus braces closed in `line`, outside JSON strings.
fn brace_balance(line: &[u8]) -> i64 {
    let (mut depth, mut in_string, mut escaped) = (0, false, false);
    for &b in line {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
        }
    }
    depth
}

/// An SSE field or comment line (what the SSE decoder reads).
fn is_framed(line: &[u8]) -> bool {
    line.is_empty()
        || line.starts_with(b":")
        || ["data", "event", "id", "retry"].iter().any(|field| {
            line.strip_prefix(field.as_bytes())
                .is_some_and(|rest| rest.is_empty() || rest[0] == b':')
        })
}

trait TrimMatches {
    fn trim_ascii_start_matches(&self, set: &[u8]) -> &[u8];
    fn trim_ascii_end_matches(&self, set: &[u8]) -> &[u8];
}

impl TrimMatches for [u8] {
    fn trim_ascii_start_matches(&self, set: &[u8]) -> &[u8] {
        let start = self
            .iter()
            .position(|b| !set.contains(b) && !b.is_ascii_whitespace())
            .unwrap_or(self.len());
        &self[start..]
    }

    fn trim_ascii_end_matches(&self, set: &[u8]) -> &[u8] {
        let end = self
            .iter()
            .rposition(|b| !set.contains(b) && !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        &self[..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ErrorClass;

    fn run(stream: &[u8], split: usize) -> (String, Result<(), CallError>) {
        let mut translator = translator("gemini", "gemini-2.5-flash");
        let mut out = Vec::new();
        let mut result = Ok(());
        for part in [&stream[..split], &stream[split..]] {
            result = translator.feed(part, &mut out);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = translator.finish(&mut out);
        }
        (String::from_utf8(out).unwrap(), result)
    }

    const TEXT: &[u8] = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"},\"index\": 0}]}\r\n\r\n";

    #[test]
    fn an_unframed_error_object_over_several_lines_fails_the_stream_at_any_split() {
        let mut stream = TEXT.to_vec();
        stream.extend_from_slice(
            b"{\n  \"error\": {\n    \"code\": 503,\n    \"message\": \"The model is overloaded.\",\n    \"status\": \"UNAVAILABLE\"\n  }\n}\n",
        );
        for split in 0..stream.len() {
            let (out, result) = run(&stream, split);
            assert!(out.contains("\"content\":\"Hi\""), "split {split}: {out}");
            let error = result.expect_err("the stream fails");
            assert_eq!(error.class(), ErrorClass::Overloaded, "split {split}");
        }
    }

    #[test]
    fn a_stream_without_a_finish_reason_is_cut_short() {
        let (_, result) = run(TEXT, 10);
        assert!(
            result
                .unwrap_err()
                .message
                .contains("ended before its last event")
        );
    }

    #[test]
    fn framed_lines_are_not_taken_for_unframed_text() {
        for framed in [
            &b"data: {}"[..],
            b"data",
            b": keep-alive",
            b"event: x",
            b"retry: 10",
            b"",
        ] {
            assert!(is_framed(framed), "{:?}", String::from_utf8_lossy(framed));
        }
        for unframed in [&b"{"[..], b"  \"error\": {", b"dataset: 1", b"}"] {
            assert!(
                !is_framed(unframed),
                "{:?}",
                String::from_utf8_lossy(unframed)
            );
        }
    }

    #[test]
    fn a_data_line_longer_than_the_unframed_cap_in_one_read_is_fine() {
        let long = "x".repeat(2 * MAX_ERROR_BYTES);
        let stream = format!(
            "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"{long}\"}}],\"role\": \"model\"}},\"finishReason\": \"STOP\",\"index\": 0}}]}}\r\n\r\n"
        );
        for split in [3, stream.len() / 2] {
            let (out, result) = run(stream.as_bytes(), split);
            result.unwrap();
            assert!(out.contains(&long), "split {split}");
        }
        // Unframed text past the cap still fails.
        let mut junk = TEXT.to_vec();
        junk.extend_from_slice(format!("{{\"error\": \"{long}").as_bytes());
        let (_, result) = run(&junk, TEXT.len());
        assert!(result.unwrap_err().message.contains("too long"));
    }

    #[test]
    fn a_stray_unframed_line_does_not_hide_a_later_error() {
        for stray in [
            "<html>oops</html>\n",
            "{\"note\": \"not an error\"}\n",
            "}\n",
        ] {
            let mut stream = TEXT.to_vec();
            stream.extend_from_slice(stray.as_bytes());
            stream.extend_from_slice(
                b"{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"Quota {exceeded}\",\n    \"status\": \"RESOURCE_EXHAUSTED\",\n    \"details\": [\n      {\n        \"@type\": \"type.googleapis.com/google.rpc.RetryInfo\",\n        \"retryDelay\": \"3s\"\n      }\n    ]\n  }\n}\n",
            );
            for split in 0..stream.len() {
                let (_, result) = run(&stream, split);
                let error = result.expect_err("the stream fails");
                assert_eq!(
                    error.class(),
                    ErrorClass::RateLimit,
                    "{stray:?} split {split}"
                );
                assert_eq!(error.retry_after, Some(std::time::Duration::from_secs(3)));
            }
        }
    }
}
