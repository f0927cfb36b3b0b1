//! A chat completion stream (OpenAI SSE chunks) as a Messages event stream: `message_start`,
//! one `content_block_start` / `content_block_delta`... / `content_block_stop` run per text,
//! thinking or tool-use block, `message_delta` with the stop reason and usage, `message_stop`.
//! The usage chunk the gateway always asks for arrives after the finish reason, so
//! `message_delta` is written at the end of the chat stream (`[DONE]`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::response::{message_id, stop_reason, usage};
use crate::{api::reframe::chat_chunks, error::ApiError, sse::DataLines};

/// A chat chunk may not grow past this (the gateway's own streams never come close).
const MAX_LINE: usize = 8 * 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by its index in the chat stream.
    Tool(u64),
}

pub struct ToMessages {
    lines: DataLines,
    started: bool,
    /// The open block and its index in the message.
    open: Option<(Block, u64)>,
    next_index: u64,
    finish_reason: Option<String>,
    usage: Option<Value>,
    done: bool,
}

impl Default for ToMessages {
    fn default() -> Self {
        Self {
            lines: DataLines::new(MAX_LINE),
            started: false,
            open: None,
            next_index: 0,
            finish_reason: None,
            usage: None,
            done: false,
        }
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolDelta>,
}

#[derive(Deserialize)]
struct ToolDelta {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// One SSE event in Anthropic's framing.
pub fn event(out: &mut Vec<u8>, data: &Value) {
    let name = data["type"].as_str().unwrap_or("message");
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// The error event that ends a stream that failed after it began.
pub fn error_event(error: &ApiError) -> Vec<u8> {
    let mut out = Vec::new();
    event(&mut out, &super::error::body_value(error));
    out
}

impl ToMessages {
    /// Translates the chat SSE bytes of one chunk, appending Messages events to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let (chunks, done) = chat_chunks::<Chunk>(&mut self.lines, bytes);
        for chunk in chunks {
            self.chunk(chunk, out);
        }
        if done {
            self.end(out);
        }
    }

    /// The chat stream ended: closes the message if `[DONE]` never came.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.end(out);
    }

    fn chunk(&mut self, chunk: Chunk, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            event(
                out,
                &json!({"type": "message_start", "message": {
                    "id": message_id(chunk.id.as_deref()),
                    "type": "message",
                    "role": "assistant",
                    "model": chunk.model.unwrap_or_default(),
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            );
        }
        if let Some(usage) = chunk.usage.filter(|u| !u.is_null()) {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return;
        };
        let delta = choice.delta;
        if let Some(thinking) = delta.reasoning_content.filter(|t| !t.is_empty()) {
            self.open_block(
                Block::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                out,
            );
            self.delta(json!({"type": "thinking_delta", "thinking": thinking}), out);
        }
        for text in [delta.content, delta.refusal].into_iter().flatten() {
            if !text.is_empty() {
                self.open_block(Block::Text, json!({"type": "text", "text": ""}), out);
                self.delta(json!({"type": "text_delta", "text": text}), out);
            }
        }
        for call in delta.tool_calls {
            let function = call.function.unwrap_or(FunctionDelta {
                name: None,
                arguments: None,
            });
            if self.open.map(|(b, _)| b) != Some(Block::Tool(call.index)) {
                self.open_block(
                    Block::Tool(call.index),
                    json!({
                        "type": "tool_use",
                        "id": call.id.unwrap_or_default(),
                        "name": function.name.unwrap_or_default(),
                        "input": {},
                    }),
                    out,
                );
            }
            if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
                self.delta(
                    json!({"type": "input_json_delta", "partial_json": arguments}),
                    out,
                );
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
    }

    fn open_block(&mut self, block: Block, start: Value, out: &mut Vec<u8>) {
        if self.open.map(|(b, _)| b) == Some(block) {
            return;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((block, index));
        event(
            out,
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
    }

    fn delta(&mut self, delta: Value, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open {
            event(
                out,
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
        }
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            event(out, &json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done || !self.started {
            return;
        }
        self.done = true;
        self.close_block(out);
        // The prompt's count is known only now, so the delta carries it as well as the output's.
        let usage = usage(self.usage.as_ref().unwrap_or(&Value::Null));
        event(
            out,
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(self.finish_reason.as_deref()), "stop_sequence": null},
                "usage": usage,
            }),
        );
        event(out, &json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn a_chat_stream_becomes_the_messages_event_sequence() {
        let chat = concat!(
            "data: {\"id\":\"chatcmpl-1\",\"model\":\"m\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
            "data: [DONE]\n\n",
        );
        // Split at every byte: the translation never depends on how the bytes arrive.
        for split in [0, 17, 100, chat.len() / 2, chat.len()] {
            let mut translator = ToMessages::default();
            let mut out = Vec::new();
            translator.feed(&chat.as_bytes()[..split], &mut out);
            translator.feed(&chat.as_bytes()[split..], &mut out);
            translator.finish(&mut out);
            let types: Vec<String> = events(&out)
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(
                types,
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_delta",
                    "content_block_stop",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop",
                ],
                "split at {split}"
            );
            let all = events(&out);
            assert_eq!(all[0]["message"]["id"], "msg_1");
            assert_eq!(all[5]["content_block"]["name"], "f");
            assert_eq!(all[6]["delta"]["partial_json"], "{\"a\":1}");
            assert_eq!(all[8]["delta"]["stop_reason"], "tool_use");
            assert_eq!(all[8]["usage"]["output_tokens"], 4);
            assert_eq!(all[8]["usage"]["input_tokens"], 9);
        }
    }
}
