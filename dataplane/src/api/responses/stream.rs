//! A chat completion stream (OpenAI SSE chunks) as a Responses event stream:
//! `response.created`, `response.in_progress`, then per output item `response.output_item.added`
//! and its deltas (`response.output_text.delta` in a content part, or
//! `response.function_call_arguments.delta`) closed by their `.done` events, and
//! `response.completed` with the whole response and its usage, at the chat stream's end. Every
//! event carries its `sequence_number`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::response::{envelope, function_item, message_item, response_id, usage};
use crate::{api::reframe::chat_chunks, error::ApiError, sse::DataLines};

const MAX_LINE: usize = 8 * 1024 * 1024;

enum Item {
    Message {
        id: String,
        text: String,
    },
    Function {
        call_id: String,
        name: String,
        arguments: String,
        chat_index: u64,
    },
}

pub struct ToResponses {
    lines: DataLines,
    sequence: u64,
    id: Option<String>,
    model: Value,
    created_at: i64,
    /// Finished items, and the open one.
    done_items: Vec<Value>,
    open: Option<Item>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    finished: bool,
}

impl Default for ToResponses {
    fn default() -> Self {
        Self {
            lines: DataLines::new(MAX_LINE),
            sequence: 0,
            id: None,
            model: Value::Null,
            created_at: 0,
            done_items: Vec::new(),
            open: None,
            finish_reason: None,
            usage: None,
            finished: false,
        }
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    created: Option<i64>,
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

#[derive(Deserialize, Default)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// The error event that ends a stream that failed after it began.
pub fn error_event(error: &ApiError) -> Vec<u8> {
    let data = json!({
        "type": "error",
        "code": error.code,
        "message": error.message,
        "param": error.param,
    });
    format!("event: error\ndata: {data}\n\n").into_bytes()
}

impl ToResponses {
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let (chunks, done) = chat_chunks::<Chunk>(&mut self.lines, bytes);
        for chunk in chunks {
            self.chunk(chunk, out);
        }
        if done {
            self.end(out);
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.end(out);
    }

    fn emit(&mut self, out: &mut Vec<u8>, mut data: Value) {
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        let name = data["type"].as_str().unwrap_or("message").to_owned();
        out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
    }

    fn id(&self) -> String {
        self.id.clone().unwrap_or_else(|| response_id(None))
    }

    fn response(&self, status: &str, usage: Option<Value>) -> Value {
        envelope(
            &self.id(),
            &self.model,
            self.created_at,
            self.done_items.clone(),
            self.finish_reason.as_deref(),
            usage,
            status,
        )
    }

    fn chunk(&mut self, chunk: Chunk, out: &mut Vec<u8>) {
        if self.id.is_none() {
            self.id = Some(response_id(chunk.id.as_deref()));
            self.model = chunk.model.unwrap_or(Value::Null);
            self.created_at = chunk.created.unwrap_or(0);
            let created = self.response("in_progress", None);
            self.emit(
                out,
                json!({"type": "response.created", "response": created.clone()}),
            );
            self.emit(
                out,
                json!({"type": "response.in_progress", "response": created}),
            );
        }
        if let Some(usage) = chunk.usage.filter(|u| !u.is_null()) {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return;
        };
        for text in [choice.delta.content, choice.delta.refusal]
            .into_iter()
            .flatten()
        {
            if !text.is_empty() {
                self.text(&text, out);
            }
        }
        for call in choice.delta.tool_calls {
            self.tool(call, out);
        }
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
    }

    fn output_index(&self) -> usize {
        self.done_items.len()
    }

    fn text(&mut self, delta: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Item::Message { .. })) {
            self.close(out);
            let id = format!("msg_{}_{}", &self.id()[5..], self.output_index());
            let index = self.output_index();
            self.emit(out, json!({"type": "response.output_item.added", "output_index": index, "item": {
                "type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": [],
            }}));
            self.emit(out, json!({"type": "response.content_part.added", "item_id": id, "output_index": index,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
            self.open = Some(Item::Message {
                id,
                text: String::new(),
            });
        }
        let index = self.output_index();
        if let Some(Item::Message { id, text }) = &mut self.open {
            text.push_str(delta);
            let id = id.clone();
            self.emit(
                out,
                json!({"type": "response.output_text.delta", "item_id": id, "output_index": index,
                "content_index": 0, "delta": delta, "logprobs": []}),
            );
        }
    }

    fn tool(&mut self, call: ToolDelta, out: &mut Vec<u8>) {
        let same = matches!(&self.open, Some(Item::Function { chat_index, .. }) if *chat_index == call.index);
        let function = call.function.unwrap_or_default();
        if !same {
            self.close(out);
            let call_id = call.id.unwrap_or_default();
            let name = function.name.clone().unwrap_or_default();
            let index = self.output_index();
            self.emit(
                out,
                json!({"type": "response.output_item.added", "output_index": index,
                "item": function_item(&call_id, &name, "", "in_progress")}),
            );
            self.open = Some(Item::Function {
                call_id,
                name,
                arguments: String::new(),
                chat_index: call.index,
            });
        }
        let index = self.output_index();
        if let (
            Some(delta),
            Some(Item::Function {
                call_id,
                name,
                arguments,
                ..
            }),
        ) = (function.arguments.filter(|a| !a.is_empty()), &mut self.open)
        {
            arguments.push_str(&delta);
            let item_id = function_item(call_id, name, "", "")["id"].clone();
            self.emit(
                out,
                json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                "output_index": index, "delta": delta}),
            );
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let index = self.output_index();
        let item = match self.open.take() {
            None => return,
            Some(Item::Message { id, text }) => {
                self.emit(out, json!({"type": "response.output_text.done", "item_id": id, "output_index": index,
                    "content_index": 0, "text": text, "logprobs": []}));
                self.emit(out, json!({"type": "response.content_part.done", "item_id": id, "output_index": index,
                    "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}));
                message_item(&id, &text, "completed")
            }
            Some(Item::Function {
                call_id,
                name,
                arguments,
                ..
            }) => {
                let item = function_item(&call_id, &name, &arguments, "completed");
                self.emit(
                    out,
                    json!({"type": "response.function_call_arguments.done", "item_id": item["id"],
                    "output_index": index, "name": name, "arguments": arguments}),
                );
                item
            }
        };
        self.emit(out, json!({"type": "response.output_item.done", "output_index": index, "item": item.clone()}));
        self.done_items.push(item);
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.finished || self.id.is_none() {
            return;
        }
        self.finished = true;
        self.close(out);
        let usage = usage(self.usage.as_ref().unwrap_or(&Value::Null));
        let response = self.response("completed", Some(usage));
        let kind = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, json!({"type": kind, "response": response}));
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
    fn a_chat_stream_becomes_the_responses_event_sequence() {
        let chat = concat!(
            "data: {\"id\":\"chatcmpl-1\",\"model\":\"m\",\"created\":5,\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut translator = ToResponses::default();
        let mut out = Vec::new();
        translator.feed(chat.as_bytes(), &mut out);
        translator.finish(&mut out);
        let all = events(&out);
        let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let sequence: Vec<u64> = all
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(sequence, (0..all.len() as u64).collect::<Vec<_>>());
        let completed = &all.last().unwrap()["response"];
        assert_eq!(completed["id"], "resp_1");
        assert_eq!(completed["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(completed["output"][1]["arguments"], "{}");
        assert_eq!(completed["usage"]["total_tokens"], 5);
    }
}
