//! A ConverseStream answer as an OpenAI chunk stream. The events come in event-stream frames
//! named by `:event-type`: `messageStart`, per content block an optional `contentBlockStart`
//! (tool uses have one; text blocks usually not), `contentBlockDelta`s and `contentBlockStop`,
//! then `messageStop` (the stop reason) and `metadata` (the usage), after which the stream
//! ends. Exception frames carry a mid-stream failure. Payloads hold a random-length `p` padding
//! member that is never read.

use std::borrow::Cow;

use serde::Deserialize;

use super::super::{
    CallError, ErrorClass,
    output::ChunkWriter,
    translated::{StreamTranslator, cut_short, malformed},
};
use super::{
    NAME, error,
    eventstream::{DecodeError, Decoder, Frame},
    response::{TokenUsage, finish_reason},
};

/// Largest frame accepted: the event-stream protocol's own limit.
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The translator of one streamed answer.
pub struct ConverseStream {
    frames: Decoder,
    writer: ChunkWriter,
    tools: Vec<ToolBlock>,
}

/// A tool-use content block: Converse numbers blocks (text and tools together), OpenAI numbers
/// tool calls from 0.
struct ToolBlock {
    block: u64,
    index: u32,
    has_arguments: bool,
}

impl ConverseStream {
    pub fn new(model: &str) -> Self {
        Self {
            frames: Decoder::new(MAX_FRAME_BYTES),
            writer: ChunkWriter::new(model),
            tools: Vec::new(),
        }
    }
}

impl StreamTranslator for ConverseStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CallError> {
        if self.writer.has_ended() {
            // The answer is complete: whatever follows `metadata` cannot change it.
            return Ok(());
        }
        let (writer, tools) = (&mut self.writer, &mut self.tools);
        let result = self.frames.push(bytes, |frame| {
            if writer.has_ended() {
                return Ok(());
            }
            handle(frame, writer, tools)
        });
        out.extend_from_slice(&self.writer.take());
        result.map_err(|e| match e {
            DecodeError::Frame(e) => malformed(NAME, e),
            DecodeError::Handler(e) => e,
        })
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CallError> {
        out.extend_from_slice(&self.writer.take());
        if self.writer.has_ended() {
            Ok(())
        } else {
            // No `metadata` event: the answer (and its usage) is incomplete.
            Err(cut_short(NAME))
        }
    }
}

fn handle(
    frame: Frame<'_>,
    writer: &mut ChunkWriter,
    tools: &mut Vec<ToolBlock>,
) -> Result<(), CallError> {
    match frame.string(":message-type") {
        Some("exception") => Err(error::from_exception(
            frame.string(":exception-type").unwrap_or_default(),
            frame.payload,
        )),
        Some("error") => {
            // A protocol-level failure of the stream itself.
            Err(CallError::generation_failed(
                ErrorClass::Upstream,
                NAME,
                &format!(
                    "the stream failed ({})",
                    frame.string(":error-code").unwrap_or("no error code")
                ),
            ))
        }
        _ => event(
            frame.string(":event-type").unwrap_or_default(),
            frame.payload,
            writer,
            tools,
        ),
    }
}

fn event(
    name: &str,
    payload: &[u8],
    writer: &mut ChunkWriter,
    tools: &mut Vec<ToolBlock>,
) -> Result<(), CallError> {
    match name {
        "contentBlockStart" => {
            let start: BlockStart = parse(name, payload)?;
            if let Some(tool) = start.start.tool_use {
                let index = writer.tool_call(&tool.tool_use_id, &tool.name, "");
                tools.push(ToolBlock {
                    block: start.content_block_index,
                    index,
                    has_arguments: false,
                });
            }
        }
        "contentBlockDelta" => {
            let delta: BlockDelta<'_> = parse(name, payload)?;
            if let Some(text) = &delta.delta.text {
                writer.text(text);
            }
            if let Some(tool_use) = &delta.delta.tool_use {
                let block = delta.content_block_index;
                let tool = tools.iter_mut().find(|t| t.block == block).ok_or_else(|| {
                    malformed(
                        NAME,
                        format!("tool input for content block {block}, which is no tool use"),
                    )
                })?;
                tool.has_arguments |= !tool_use.input.is_empty();
                writer.tool_arguments(tool.index, &tool_use.input);
            }
            // Reasoning, citation and other deltas have no place in a chat completion chunk.
        }
        "contentBlockStop" => {
            let stop: BlockStop = parse(name, payload)?;
            if let Some(tool) = tools
                .iter_mut()
                .find(|t| t.block == stop.content_block_index && !t.has_arguments)
            {
                // A tool without arguments streams none; its arguments are still an object.
                tool.has_arguments = true;
                writer.tool_arguments(tool.index, "{}");
            }
        }
        "messageStop" => {
            let stop: MessageStop = parse(name, payload)?;
            writer.finish(finish_reason(&stop.stop_reason)?);
        }
        "metadata" => {
            if !writer.has_finished() {
                // Usage without a stop reason: the answer was cut between the two.
                return Err(malformed(NAME, "`metadata` arrived before `messageStop`"));
            }
            let metadata: Metadata = parse(name, payload)?;
            *writer.usage_mut() = metadata.usage.to_openai();
            writer.end();
        }
        // `messageStart` says only the role; newer events are not ours to read.
        _ => {}
    }
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(name: &str, payload: &'a [u8]) -> Result<T, CallError> {
    serde_json::from_slice(payload).map_err(|e| malformed(NAME, format!("a `{name}` event: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    content_block_index: u64,
    start: Start,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    #[serde(default)]
    tool_use: Option<ToolUseStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta<'a> {
    content_block_index: u64,
    #[serde(borrow)]
    delta: Delta<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_use: Option<ToolUseDelta<'a>>,
}

#[derive(Deserialize)]
struct ToolUseDelta<'a> {
    /// A fragment of the input's JSON text.
    #[serde(borrow)]
    input: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStop {
    content_block_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    stop_reason: String,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: TokenUsage,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::eventstream::encode;
    use super::*;

    fn event(name: &str, payload: Value) -> Vec<u8> {
        encode(
            &[
                (":event-type", name),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        )
    }

    /// The chunks (as JSON) and the outcome, the stream fed in pieces of `size` bytes.
    fn translate(stream: &[u8], size: usize) -> (Vec<Value>, Result<(), CallError>) {
        let mut translator = ConverseStream::new("m");
        let mut out = Vec::new();
        let mut result = Ok(());
        for piece in stream.chunks(size) {
            result = translator.feed(piece, &mut out);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = translator.finish(&mut out);
        }
        let chunks = String::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter_map(|line| line.strip_prefix("data: "))
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).unwrap())
            .collect();
        (chunks, result)
    }

    fn tool_stream() -> Vec<u8> {
        [
            event("messageStart", json!({"role": "assistant", "p": "abc"})),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Checking."}}),
            ),
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
            event(
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "a"}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"x\":"}}}),
            ),
            event(
                "contentBlockStart",
                json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t2", "name": "b"}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
            ),
            event("contentBlockStop", json!({"contentBlockIndex": 1})),
            event("contentBlockStop", json!({"contentBlockIndex": 2})),
            event("messageStop", json!({"stopReason": "tool_use"})),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}}),
            ),
        ]
        .concat()
    }

    #[test]
    fn tool_indexes_count_calls_not_blocks_even_when_interleaved() {
        let (chunks, result) = translate(&tool_stream(), 1000);
        result.unwrap();
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
            .map(|calls| &calls[0])
            .collect();
        assert_eq!(calls[0]["index"], 0);
        assert_eq!(calls[0]["id"], "t1");
        assert_eq!(calls[0]["function"]["arguments"], "");
        assert_eq!(
            calls[1],
            &json!({"index": 0, "function": {"arguments": "{\"x\":"}})
        );
        assert_eq!(calls[2]["index"], 1);
        assert_eq!(calls[2]["id"], "t2");
        assert_eq!(
            calls[3],
            &json!({"index": 0, "function": {"arguments": "1}"}})
        );
        assert_eq!(
            calls[4],
            &json!({"index": 1, "function": {"arguments": "{}"}}),
            "a tool without input deltas gets `{{}}` at its stop"
        );
        assert_eq!(calls.len(), 5);
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 7);
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_chunks() {
        let stream = tool_stream();
        let strip = |chunks: Vec<Value>| -> Vec<Value> {
            chunks
                .into_iter()
                .map(|mut c| {
                    c["id"] = json!("");
                    c["created"] = json!(0);
                    c
                })
                .collect()
        };
        let whole = strip(translate(&stream, stream.len()).0);
        for size in [1, 2, 3, 5, 11, 64, 200] {
            let (chunks, result) = translate(&stream, size);
            result.unwrap();
            assert_eq!(strip(chunks), whole, "pieces of {size}");
        }
    }

    #[test]
    fn usage_without_a_stop_reason_is_not_a_complete_answer() {
        let stream = [
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            ),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}),
            ),
        ]
        .concat();
        let (chunks, result) = translate(&stream, 9);
        assert!(result.unwrap_err().message.contains("before `messageStop`"));
        assert!(
            chunks.iter().all(|c| c != "[DONE]"),
            "never ended as complete"
        );
    }

    #[test]
    fn a_stream_without_metadata_is_cut_short() {
        let stream = [
            event("messageStart", json!({"role": "assistant"})),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            ),
            event("messageStop", json!({"stopReason": "end_turn"})),
        ]
        .concat();
        let (chunks, result) = translate(&stream, 9);
        let error = result.unwrap_err();
        assert!(error.message.contains("ended before its last event"));
        assert!(
            chunks
                .iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null()),
            "no finish chunk: a cut stream never looks complete"
        );
    }

    #[test]
    fn an_exception_frame_fails_the_stream_with_its_class() {
        let stream = [
            event("messageStart", json!({"role": "assistant"})),
            encode(
                &[
                    (":exception-type", "serviceUnavailableException"),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                br#"{"message":"busy"}"#,
            ),
        ]
        .concat();
        let error = translate(&stream, 4).1.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Overloaded);
    }

    #[test]
    fn a_corrupted_frame_fails_the_stream() {
        let mut stream = event("messageStart", json!({"role": "assistant"}));
        let middle = stream.len() / 2;
        stream[middle] ^= 0x20;
        let error = translate(&stream, 4).1.unwrap_err();
        assert!(error.message.contains("CRC"), "{}", error.message);
    }

    #[test]
    fn a_tool_delta_for_an_unknown_block_is_malformed() {
        let stream = event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{"}}}),
        );
        let error = translate(&stream, 100).1.unwrap_err();
        assert!(error.message.contains("block 3"), "{}", error.message);
    }

    #[test]
    fn frames_after_metadata_are_ignored() {
        let stream = [
            event("messageStop", json!({"stopReason": "end_turn"})),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 1, "outputTokens": 1}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "late"}}),
            ),
        ]
        .concat();
        let (chunks, result) = translate(&stream, 100);
        result.unwrap();
        assert!(
            !chunks
                .iter()
                .any(|c| c["choices"][0]["delta"]["content"] == "late")
        );
    }
}
