//! A streamed chat completion assembled back into the complete answer it stands for, so a
//! stream can be stored (and later served to a client that does not stream, or replayed to one
//! that does). Only a stream in which every choice finished assembles.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::sse::DataLines;

/// Chunks above this line length are not assembled (the stream is then not stored).
const MAX_LINE: usize = 1024 * 1024;

#[derive(Default)]
struct Choice {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    /// Tool calls by index: id, type, name, arguments.
    tool_calls: BTreeMap<u64, (Value, Value, String, String)>,
    finish_reason: Option<Value>,
}

pub struct StreamAssembler {
    lines: DataLines,
    /// id, created, model, system_fingerprint of the first chunk.
    header: Option<Map<String, Value>>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
    broken: bool,
}

impl Default for StreamAssembler {
    fn default() -> Self {
        Self {
            lines: DataLines::new(MAX_LINE),
            header: None,
            choices: BTreeMap::new(),
            usage: None,
            broken: false,
        }
    }
}

impl StreamAssembler {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        let mut chunks = Vec::new();
        if self
            .lines
            .push(bytes, |data| {
                if data != b"[DONE]" {
                    chunks.push(serde_json::from_slice::<Value>(data));
                }
            })
            .is_err()
        {
            self.broken = true;
        }
        for chunk in chunks {
            match chunk {
                Ok(chunk) => self.chunk(chunk),
                Err(_) => self.broken = true,
            }
        }
    }

    fn chunk(&mut self, chunk: Value) {
        let Value::Object(mut chunk) = chunk else {
            self.broken = true;
            return;
        };
        if chunk.contains_key("error") {
            self.broken = true;
            return;
        }
        if self.header.is_none() {
            let header = ["id", "created", "model", "system_fingerprint"]
                .into_iter()
                .filter_map(|k| Some((k.to_owned(), chunk.get(k)?.clone())))
                .collect();
            self.header = Some(header);
        }
        if let Some(usage) = chunk.remove("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage);
        }
        let Some(Value::Array(choices)) = chunk.remove("choices") else {
            return;
        };
        for choice in choices {
            let index = choice["index"].as_u64().unwrap_or(0);
            let slot = self.choices.entry(index).or_default();
            let delta = &choice["delta"];
            if let Some(role) = delta.get("role").filter(|r| !r.is_null()) {
                slot.role = Some(role.clone());
            }
            if let Some(text) = delta["content"].as_str() {
                slot.content.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(text) = delta["refusal"].as_str() {
                slot.refusal.get_or_insert_with(String::new).push_str(text);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let at = call["index"].as_u64().unwrap_or(0);
                let entry = slot.tool_calls.entry(at).or_insert_with(|| {
                    (Value::Null, json!("function"), String::new(), String::new())
                });
                if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
                    entry.0 = id.clone();
                }
                if let Some(kind) = call.get("type").filter(|v| !v.is_null()) {
                    entry.1 = kind.clone();
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    entry.2.push_str(name);
                }
                if let Some(arguments) = call["function"]["arguments"].as_str() {
                    entry.3.push_str(arguments);
                }
            }
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                slot.finish_reason = Some(reason.clone());
            }
        }
    }

    /// The complete answer, if every choice finished and nothing was malformed.
    pub fn finish(self) -> Option<Bytes> {
        if self.broken
            || self.choices.is_empty()
            || self.choices.values().any(|c| c.finish_reason.is_none())
        {
            return None;
        }
        let mut answer = self.header.unwrap_or_default();
        answer.insert("object".to_owned(), json!("chat.completion"));
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, c)| {
                let mut message = Map::new();
                message.insert(
                    "role".to_owned(),
                    c.role.unwrap_or_else(|| json!("assistant")),
                );
                message.insert("content".to_owned(), json!(c.content));
                message.insert("refusal".to_owned(), json!(c.refusal));
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .into_values()
                        .map(|(id, kind, name, arguments)| {
                            json!({"id": id, "type": kind,
                                   "function": {"name": name, "arguments": arguments}})
                        })
                        .collect();
                    message.insert("tool_calls".to_owned(), json!(calls));
                }
                json!({"index": index, "message": message, "logprobs": null,
                       "finish_reason": c.finish_reason})
            })
            .collect();
        answer.insert("choices".to_owned(), json!(choices));
        if let Some(usage) = self.usage {
            answer.insert("usage".to_owned(), usage);
        }
        serde_json::to_vec(&answer).ok().map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_with_text_and_tool_calls_assembles_into_its_completion() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c1\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        );
        for split in [1, 17, 100, stream.len() - 3] {
            let mut assembler = StreamAssembler::default();
            assembler.feed(&stream.as_bytes()[..split]);
            assembler.feed(&stream.as_bytes()[split..]);
            let answer: Value = serde_json::from_slice(&assembler.finish().unwrap()).unwrap();
            assert_eq!(answer["object"], "chat.completion");
            let message = &answer["choices"][0]["message"];
            assert_eq!(message["content"], "Hello");
            assert_eq!(
                message["tool_calls"][0]["function"]["arguments"],
                "{\"a\":1}"
            );
            assert_eq!(message["tool_calls"][0]["id"], "call_1");
            assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
            assert_eq!(answer["usage"]["total_tokens"], 5);
        }
    }

    #[test]
    fn an_unfinished_choice_or_an_error_event_does_not_assemble() {
        let mut unfinished = StreamAssembler::default();
        unfinished.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n");
        assert!(unfinished.finish().is_none());
        let mut failed = StreamAssembler::default();
        failed.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\n");
        assert!(failed.finish().is_none());
    }
}
