//! OpenAI's response shapes, written: the one place translated answers become
//! `chat.completion`, `chat.completion.chunk` SSE and `list` of embeddings, so every adapter
//! emits the same field order, ids and finish reasons.

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::Usage;

/// OpenAI's `finish_reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// A tool call in a complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallOut {
    pub id: String,
    pub name: String,
    /// JSON text, as OpenAI sends it.
    pub arguments: String,
}

/// One choice of a complete answer.
#[derive(Debug, Clone, Default)]
pub struct ChoiceOut {
    pub text: Option<String>,
    pub tool_calls: Vec<ToolCallOut>,
    pub finish_reason: Option<FinishReason>,
}

impl ChoiceOut {
    pub fn push_text(&mut self, text: &str) {
        self.text.get_or_insert_with(String::new).push_str(text);
    }

    /// `tool_calls` when the model called tools and the provider said only that it stopped
    /// (Gemini says `STOP` on function-call turns).
    fn finish(&self) -> FinishReason {
        FinishReason::of(self.finish_reason, !self.tool_calls.is_empty())
    }
}

impl FinishReason {
    /// The reason an answer reports: the provider's, except that a turn with tool calls is
    /// `tool_calls` when the provider said only that it stopped (or nothing).
    fn of(reported: Option<Self>, called_tools: bool) -> Self {
        match reported {
            Some(Self::Stop) | None if called_tools => Self::ToolCalls,
            Some(reason) => reason,
            None => Self::Stop,
        }
    }
}

/// A complete `chat.completion`.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: String,
    pub model: String,
    pub choices: Vec<ChoiceOut>,
    pub usage: Usage,
}

impl Completion {
    pub fn new(model: &str) -> Self {
        Self {
            id: completion_id(),
            model: model.to_owned(),
            choices: vec![ChoiceOut::default()],
            usage: Usage::default(),
        }
    }

    /// The first choice, which every provider without `n` fills.
    pub fn choice(&mut self) -> &mut ChoiceOut {
        if self.choices.is_empty() {
            self.choices.push(ChoiceOut::default());
        }
        &mut self.choices[0]
    }

    pub fn to_json(&self) -> Bytes {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, choice)| {
                let mut message = json!({
                    "role": "assistant",
                    "content": choice.text,
                    "refusal": null,
                });
                if !choice.tool_calls.is_empty() {
                    message["tool_calls"] = choice
                        .tool_calls
                        .iter()
                        .map(|call| {
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": call.arguments},
                            })
                        })
                        .collect();
                }
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": choice.finish(),
                })
            })
            .collect();
        let body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": now(),
            "model": self.model,
            "choices": choices,
            "usage": self.usage,
        });
        Bytes::from(body.to_string())
    }
}

/// Writes an OpenAI `chat.completion.chunk` SSE stream for one choice: the role first, then
/// text and tool-call deltas as they come, then the finish chunk, the usage chunk (always: the
/// gateway costs every stream and takes it out again when the client did not ask) and `[DONE]`.
pub struct ChunkWriter {
    id: String,
    model: String,
    created: i64,
    role_sent: bool,
    tool_calls: u32,
    finish: Option<FinishReason>,
    usage: Usage,
    ended: bool,
    out: Vec<u8>,
}

impl ChunkWriter {
    pub fn new(model: &str) -> Self {
        Self {
            id: completion_id(),
            model: model.to_owned(),
            created: now(),
            role_sent: false,
            tool_calls: 0,
            finish: None,
            usage: Usage::default(),
            ended: false,
            out: Vec::new(),
        }
    }

    /// A text delta (empty text writes nothing).
    pub fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.delta(json!({"content": text}));
    }

    /// Opens the next tool call and returns its OpenAI index (tool calls count from 0, whatever
    /// the provider's block numbering). `arguments` is the whole JSON text when the provider
    /// sends calls whole, or empty when argument deltas follow.
    pub fn tool_call(&mut self, id: &str, name: &str, arguments: &str) -> u32 {
        let index = self.tool_calls;
        self.tool_calls += 1;
        self.delta(json!({"tool_calls": [{
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }]}));
        index
    }

    /// A fragment of the arguments of the tool call at `index`.
    pub fn tool_arguments(&mut self, index: u32, fragment: &str) {
        if fragment.is_empty() {
            return;
        }
        self.delta(json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}));
    }

    /// How many tool calls were opened so far.
    pub fn tool_call_count(&self) -> u32 {
        self.tool_calls
    }

    /// Records the finish reason; it is written by `end`, after any content still to come.
    pub fn finish(&mut self, reason: FinishReason) {
        self.finish = Some(reason);
    }

    pub fn has_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// Usage so far, to be updated as the provider reports it.
    pub fn usage_mut(&mut self) -> &mut Usage {
        &mut self.usage
    }

    /// Writes the finish chunk, the usage chunk and `[DONE]` (once).
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.ensure_role();
        let reason = FinishReason::of(self.finish, self.tool_calls > 0);
        let chunk = self.chunk(json!([{
            "index": 0, "delta": {}, "logprobs": null, "finish_reason": reason,
        }]));
        self.write(&chunk);
        self.usage.total_tokens = self
            .usage
            .prompt_tokens
            .saturating_add(self.usage.completion_tokens);
        let mut usage = self.chunk(json!([]));
        usage["usage"] = json!(self.usage);
        self.write(&usage);
        self.out.extend_from_slice(b"data: [DONE]\n\n");
    }

    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// The bytes written since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    fn ensure_role(&mut self) {
        if !self.role_sent {
            self.role_sent = true;
            let chunk = self.chunk(json!([{
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            }]));
            self.write(&chunk);
        }
    }

    fn delta(&mut self, delta: Value) {
        self.ensure_role();
        let chunk = self.chunk(json!([{
            "index": 0, "delta": delta, "logprobs": null, "finish_reason": null,
        }]));
        self.write(&chunk);
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn write(&mut self, chunk: &Value) {
        self.out.extend_from_slice(b"data: ");
        // Writing a JSON value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, chunk);
        self.out.extend_from_slice(b"\n\n");
    }
}

/// An OpenAI embeddings `list`, as floats or base64 of little-endian f32 (what the OpenAI SDKs
/// ask for by default). Written straight from the f32 values, so `0.0123` stays `0.0123` (a
/// `serde_json::Value` would widen it to f64 digits).
pub fn embeddings(model: &str, vectors: &[Vec<f32>], base64: bool, usage: Usage) -> Bytes {
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Vector<'a> {
        Floats(&'a [f32]),
        Base64(String),
    }
    #[derive(Serialize)]
    struct Item<'a> {
        object: &'static str,
        index: usize,
        embedding: Vector<'a>,
    }
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item<'a>>,
        model: &'a str,
        usage: Value,
    }
    let data = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| Item {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Floats(vector)
            },
        })
        .collect();
    let list = List {
        object: "list",
        data,
        model,
        usage: json!({"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}),
    };
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

/// A fresh `chatcmpl-` id: providers without ids (Bedrock) or with their own (`msg_...`) get one
/// id per answer, kept on every chunk.
pub fn completion_id() -> String {
    format!(
        "chatcmpl-{:016x}{:08x}",
        fastrand::u64(..),
        fastrand::u32(..)
    )
}

/// A fresh tool-call id for providers that send none (Gemini).
pub fn tool_call_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..24)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    format!("call_{suffix}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
