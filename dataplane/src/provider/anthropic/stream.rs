//! The streamed events (`message_start`, `content_block_*`, `message_delta`, `message_stop`,
//! `ping`, `error`) as OpenAI chunks. Events are read by the `type` inside their JSON, which
//! repeats the SSE event name, so Bedrock's event-stream payloads (no SSE names) read the same.
//! In JSON mode the forced `json_response` call's argument fragments are the content deltas.

use std::{borrow::Cow, collections::HashMap};

use serde::Deserialize;
use serde_json::Value;

use super::{
    error::stream_error,
    json_mode::TOOL as JSON_TOOL,
    wire::{WireUsage, finish_reason},
};
use crate::provider::{
    CallError,
    output::{ChunkWriter, FinishReason},
    translated::{EventHandler, malformed},
};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: u64,
        #[serde(borrow)]
        content_block: StartedBlock<'a>,
    },
    ContentBlockDelta {
        index: u64,
        #[serde(borrow)]
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        #[serde(borrow)]
        error: ErrorBody<'a>,
    },
    /// `ping`, and event types added after this was written (Anthropic's versioning policy
    /// says to ignore them).
    #[serde(other)]
    Ignored,
}

#[derive(Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartedBlock<'a> {
    Text {
        #[serde(default, borrow)]
        text: Cow<'a, str>,
    },
    ToolUse {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(default)]
        input: Option<Value>,
    },
    /// Thinking, server tools and whatever comes next: none of it is the client's content.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    #[serde(rename = "input_json_delta")]
    InputJson {
        #[serde(borrow)]
        partial_json: Cow<'a, str>,
    },
    /// `thinking_delta` and `signature_delta` (reasoning stays out of the content), citations.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Cow<'a, str>,
}

/// What a content block started as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    /// A tool call: its OpenAI index (tool calls count from 0, Anthropic's block index counts
    /// every block) and whether any argument text was sent for it.
    Tool {
        index: u32,
        has_arguments: bool,
    },
    /// JSON mode's `json_response` call: its arguments are the answer's text.
    Json {
        has_text: bool,
    },
    Other,
}

/// The most content blocks open at once. Answers open a handful; a stream that opens more
/// without closing them is broken, and would otherwise grow the map without bound.
const MAX_OPEN_BLOCKS: usize = 1024;

/// The `EventHandler` of one streamed Messages answer.
pub(in crate::provider) struct MessagesStream {
    provider: &'static str,
    /// The request forced the `json_response` tool (JSON mode).
    json_mode: bool,
    /// Open blocks by Anthropic block index.
    blocks: HashMap<u64, OpenBlock>,
    usage: WireUsage,
}

impl MessagesStream {
    pub(in crate::provider) fn new(provider: &'static str, json_mode: bool) -> Self {
        Self {
            provider,
            json_mode,
            blocks: HashMap::new(),
            usage: WireUsage::default(),
        }
    }

    fn count(&mut self, usage: Option<WireUsage>, out: &mut ChunkWriter) {
        if let Some(usage) = usage {
            self.usage.update(&usage);
            *out.usage_mut() = self.usage.to_openai();
        }
    }

    fn start_block(
        &mut self,
        index: u64,
        block: StartedBlock<'_>,
        out: &mut ChunkWriter,
    ) -> Result<(), CallError> {
        if self.blocks.len() >= MAX_OPEN_BLOCKS && !self.blocks.contains_key(&index) {
            return Err(malformed(
                self.provider,
                format!("more than {MAX_OPEN_BLOCKS} content blocks open at once"),
            ));
        }
        let open = match block {
            StartedBlock::Text { text } => {
                out.text(&text);
                OpenBlock::Text
            }
            StartedBlock::ToolUse { id, name, input } => {
                // The start carries `input: {}` and the arguments follow as deltas; sending that
                // `{}` too would make `{}{"city":...}`. Only a non-empty input is the arguments.
                let arguments = match input {
                    Some(Value::Object(map)) if !map.is_empty() => Value::Object(map).to_string(),
                    _ => String::new(),
                };
                if self.json_mode && name == JSON_TOOL {
                    out.text(&arguments);
                    OpenBlock::Json {
                        has_text: !arguments.is_empty(),
                    }
                } else {
                    let index = out.tool_call(&id, &name, &arguments);
                    OpenBlock::Tool {
                        index,
                        has_arguments: !arguments.is_empty(),
                    }
                }
            }
            StartedBlock::Other => OpenBlock::Other,
        };
        self.blocks.insert(index, open);
        Ok(())
    }

    fn delta(
        &mut self,
        index: u64,
        delta: Delta<'_>,
        out: &mut ChunkWriter,
    ) -> Result<(), CallError> {
        match delta {
            // Text is text, whichever block it names.
            Delta::Text { text } => out.text(&text),
            Delta::InputJson { partial_json } => match self.blocks.get_mut(&index) {
                Some(OpenBlock::Tool {
                    index,
                    has_arguments,
                }) => {
                    if !partial_json.is_empty() {
                        *has_arguments = true;
                        out.tool_arguments(*index, &partial_json);
                    }
                }
                Some(OpenBlock::Json { has_text }) => {
                    if !partial_json.is_empty() {
                        *has_text = true;
                        out.text(&partial_json);
                    }
                }
                // Argument deltas of server tools, which the client never sees.
                Some(OpenBlock::Other) => {}
                Some(OpenBlock::Text) | None => {
                    return Err(malformed(
                        self.provider,
                        format!("tool arguments for content block {index}, which is no tool call"),
                    ));
                }
            },
            Delta::Other => {}
        }
        Ok(())
    }

    fn stop_block(&mut self, index: u64, out: &mut ChunkWriter) {
        // A tool without parameters may stream no argument text at all; OpenAI clients parse
        // `arguments` (and a JSON-mode answer) as JSON, so it becomes `{}`.
        match self.blocks.remove(&index) {
            Some(OpenBlock::Tool {
                index,
                has_arguments: false,
            }) => out.tool_arguments(index, "{}"),
            Some(OpenBlock::Json { has_text: false }) => out.text("{}"),
            _ => {}
        }
    }
}

impl EventHandler for MessagesStream {
    fn event(
        &mut self,
        _name: Option<&str>,
        data: &[u8],
        out: &mut ChunkWriter,
    ) -> Result<(), CallError> {
        let event: Event<'_> = serde_json::from_slice(data)
            .map_err(|e| malformed(self.provider, format!("an unreadable stream event: {e}")))?;
        match event {
            Event::MessageStart { message } => self.count(message.usage, out),
            Event::ContentBlockStart {
                index,
                content_block,
            } => self.start_block(index, content_block, out)?,
            Event::ContentBlockDelta { index, delta } => self.delta(index, delta, out)?,
            Event::ContentBlockStop { index } => self.stop_block(index, out),
            Event::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason.as_deref() {
                    out.finish(match finish_reason(reason) {
                        // The forced call is how the JSON answer ends, not a call to make.
                        FinishReason::ToolCalls if self.json_mode => FinishReason::Stop,
                        other => other,
                    });
                }
                self.count(usage, out);
            }
            Event::MessageStop => out.end(),
            Event::Error { error } => {
                return Err(stream_error(&error.kind, &error.message, self.provider));
            }
            Event::Ignored => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::provider::translated::{SseStream, StreamTranslator};

    /// Feeds `events` (JSON payloads) as SSE, split at every `split` bytes, and returns the
    /// OpenAI chunks' JSON and the stream's result.
    fn run(events: &[Value], split: usize) -> (Vec<Value>, Result<(), CallError>) {
        run_in(false, events, split)
    }

    fn run_in(
        json_mode: bool,
        events: &[Value],
        split: usize,
    ) -> (Vec<Value>, Result<(), CallError>) {
        let sse: String = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect();
        let mut stream = SseStream::new(
            MessagesStream::new("anthropic", json_mode),
            "claude",
            "anthropic",
        );
        let mut out = Vec::new();
        let mut result = Ok(());
        for piece in sse.as_bytes().chunks(split) {
            result = stream.feed(piece, &mut out);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = stream.finish(&mut out);
        }
        let chunks = String::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        (chunks, result)
    }

    fn start(usage: Value) -> Value {
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
               "model": "claude-x", "content": [], "stop_reason": null, "usage": usage}})
    }

    fn tool_start(index: u64, id: &str) -> Value {
        json!({"type": "content_block_start", "index": index,
               "content_block": {"type": "tool_use", "id": id, "name": "w", "input": {}}})
    }

    fn json_delta(index: u64, partial: &str) -> Value {
        json!({"type": "content_block_delta", "index": index,
               "delta": {"type": "input_json_delta", "partial_json": partial}})
    }

    fn stop(index: u64) -> Value {
        json!({"type": "content_block_stop", "index": index})
    }

    /// The text deltas of a translated stream, joined.
    fn streamed_text(chunks: &[Value]) -> String {
        chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect()
    }

    fn tool_calls(chunks: &[Value]) -> Vec<Value> {
        chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0").cloned())
            .collect()
    }

    #[test]
    fn tool_indexes_count_tool_calls_only_and_empty_arguments_become_an_object() {
        let events = [
            start(json!({"input_tokens": 10, "output_tokens": 1})),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
            stop(0),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "On it."}}),
            stop(1),
            tool_start(2, "toolu_a"),
            json_delta(2, ""),
            json_delta(2, "{\"city\": \"Pa"),
            json_delta(2, "ris\"}"),
            stop(2),
            tool_start(3, "toolu_b"),
            json_delta(3, ""),
            stop(3),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
            json!({"type": "message_stop"}),
        ];
        for split in [1, 7, 4096] {
            let (chunks, result) = run(&events, split);
            result.unwrap();
            let calls = tool_calls(&chunks);
            assert_eq!(
                calls,
                vec![
                    json!({"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "w", "arguments": ""}}),
                    json!({"index": 0, "function": {"arguments": "{\"city\": \"Pa"}}),
                    json!({"index": 0, "function": {"arguments": "ris\"}"}}),
                    json!({"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "w", "arguments": ""}}),
                    json!({"index": 1, "function": {"arguments": "{}"}}),
                ],
                "split {split}"
            );
            let text = streamed_text(&chunks);
            assert_eq!(text, "On it.", "thinking never reaches the content");
            let finish = chunks.iter().find_map(|c| {
                c.pointer("/choices/0/finish_reason")
                    .and_then(Value::as_str)
            });
            assert_eq!(finish, Some("tool_calls"));
            let usage = &chunks.last().unwrap()["usage"];
            assert_eq!(
                (
                    usage["prompt_tokens"].as_u64(),
                    usage["completion_tokens"].as_u64()
                ),
                (Some(10), Some(30))
            );
        }
    }

    #[test]
    fn a_stream_without_message_stop_fails() {
        let (_, result) = run(
            &[
                start(json!({"input_tokens": 1})),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hi"}}),
            ],
            5,
        );
        let error = result.unwrap_err();
        assert_eq!(error.kind, crate::provider::CallErrorKind::Protocol);
    }

    #[test]
    fn an_error_event_fails_the_stream_with_its_class() {
        let (chunks, result) = run(
            &[
                start(json!({"input_tokens": 1})),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ],
            3,
        );
        assert_eq!(
            chunks.len(),
            2,
            "the role chunk and the text came before the error"
        );
        let error = result.unwrap_err();
        assert_eq!(error.class(), crate::provider::ErrorClass::Overloaded);
    }

    #[test]
    fn arguments_for_a_block_that_is_no_tool_call_are_a_protocol_error() {
        let (_, result) = run(&[start(json!({})), json_delta(4, "{")], 64);
        assert!(result.unwrap_err().message.contains("block 4"));
    }

    #[test]
    fn in_json_mode_the_forced_calls_arguments_are_the_content() {
        let events = [
            start(json!({"input_tokens": 3})),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "tool_use", "id": "toolu_j", "name": "json_response", "input": {}}}),
            json_delta(0, ""),
            json_delta(0, "{\"answer\": "),
            json_delta(0, "\"fake\"}"),
            stop(0),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ];
        let (chunks, result) = run_in(true, &events, 5);
        result.unwrap();
        assert!(
            tool_calls(&chunks).is_empty(),
            "no tool call reaches the client"
        );
        let text = streamed_text(&chunks);
        assert_eq!(text, "{\"answer\": \"fake\"}");
        let finish = chunks.iter().find_map(|c| {
            c.pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
        });
        assert_eq!(finish, Some("stop"));

        let empty = [
            start(json!({})),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "tool_use", "id": "toolu_j", "name": "json_response", "input": {}}}),
            stop(0),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
            json!({"type": "message_stop"}),
        ];
        let (chunks, result) = run_in(true, &empty, 64);
        result.unwrap();
        let text = streamed_text(&chunks);
        assert_eq!(text, "{}");
    }

    #[test]
    fn a_stream_that_opens_blocks_without_end_is_refused() {
        let mut events = vec![start(json!({}))];
        events.extend((0..=MAX_OPEN_BLOCKS as u64).map(|index| {
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}})
        }));
        let (_, result) = run(&events, 4096);
        let error = result.unwrap_err();
        assert!(
            error.message.contains("content blocks open"),
            "{}",
            error.message
        );
        // Closing blocks makes room: as many blocks as wanted, one after the other.
        let mut events = vec![start(json!({}))];
        for index in 0..=MAX_OPEN_BLOCKS as u64 {
            events.push(json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "text", "text": ""}}));
            events.push(stop(index));
        }
        events.push(json!({"type": "message_stop"}));
        run(&events, 4096).1.unwrap();
    }
}
