//! The built-in mock provider: deterministic OpenAI-shaped answers with no network, for the
//! quickstart, demos and tests. Chat echoes the last user message (or calls the first tool, or
//! answers JSON in JSON mode), streams word by word with usage, embeddings are fixed-dimension
//! unit vectors derived from the input text, images are a 1x1 PNG.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{StreamExt, future::BoxFuture, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Call, CallError, CallErrorKind, Endpoint, Provider, UpstreamBody, Usage};

const DEFAULT_DIMENSIONS: u32 = 8;
/// A transparent 1x1 PNG.
const PIXEL_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==";

pub struct Mock;

impl Provider for Mock {
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<UpstreamBody, CallError>> {
        Box::pin(async move {
            let settings = call.deployment.mock.clone().unwrap_or_default();
            if settings.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
            }
            let model = call.deployment.model.as_str();
            let forwarded = call.request.forward(model, call.stream);
            let body: Value = serde_json::from_slice(&forwarded)
                .map_err(|e| CallError::new(CallErrorKind::Protocol, format!("mock: {e}")))?;
            match call.endpoint {
                Endpoint::ChatCompletions => {
                    let request: ChatRequest = serde_json::from_value(body).unwrap_or_default();
                    let reply = Reply::for_request(&request);
                    if call.stream {
                        Ok(UpstreamBody::Stream(
                            reply.stream(model, request.include_usage()),
                        ))
                    } else {
                        Ok(UpstreamBody::Complete {
                            body: Bytes::from(reply.completion(model).to_string()),
                            usage: Some(reply.usage()),
                        })
                    }
                }
                Endpoint::Embeddings => {
                    let dimensions = settings.embedding_dimensions.max(1);
                    let (body, usage) = embeddings(&body, model, dimensions);
                    Ok(UpstreamBody::Complete {
                        body,
                        usage: Some(usage),
                    })
                }
                Endpoint::ImageGenerations => Ok(UpstreamBody::Complete {
                    body: images(&body),
                    usage: None,
                }),
            }
        })
    }
}

#[derive(Default, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    stream_options: Option<Value>,
}

impl ChatRequest {
    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn prompt_tokens(&self) -> u64 {
        let chars: usize = self
            .messages
            .iter()
            .map(|m| text_of(m.get("content")).len())
            .sum();
        (chars as u64 / 4).max(1)
    }
}

/// What the mock says back.
enum Reply {
    Text { text: String, prompt_tokens: u64 },
    ToolCall { name: String, prompt_tokens: u64 },
}

impl Reply {
    fn for_request(request: &ChatRequest) -> Self {
        let prompt_tokens = request.prompt_tokens();
        let last = request.messages.last();
        let last_role = last.and_then(|m| m.get("role")).and_then(Value::as_str);
        if last_role != Some("tool")
            && let Some(name) = request
                .tools
                .first()
                .and_then(|t| t.pointer("/function/name"))
                .and_then(Value::as_str)
        {
            return Self::ToolCall {
                name: name.to_owned(),
                prompt_tokens,
            };
        }
        let json_mode = request
            .response_format
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "json_object" || t == "json_schema");
        let text = if last_role == Some("tool") {
            format!(
                "tool result received: {}",
                text_of(last.and_then(|m| m.get("content")))
            )
        } else if json_mode {
            r#"{"answer":"mock"}"#.to_owned()
        } else {
            let said = request
                .messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .map(|m| text_of(m.get("content")))
                .unwrap_or_default();
            format!("Hello from modelgate mock! You said: {said}")
        };
        Self::Text {
            text,
            prompt_tokens,
        }
    }

    fn usage(&self) -> Usage {
        let (prompt, completion) = match self {
            Self::Text {
                text,
                prompt_tokens,
            } => (
                *prompt_tokens,
                text.split_whitespace().count().max(1) as u64,
            ),
            Self::ToolCall { prompt_tokens, .. } => (*prompt_tokens, 1),
        };
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Usage::default()
        }
    }

    fn tool_call(name: &str) -> Value {
        json!({"id": "call_mock_0", "type": "function", "function": {"name": name, "arguments": "{}"}})
    }

    fn completion(&self, model: &str) -> Value {
        let (message, finish) = match self {
            Self::Text { text, .. } => (
                json!({"role": "assistant", "content": text, "refusal": null}),
                "stop",
            ),
            Self::ToolCall { name, .. } => (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [Self::tool_call(name)]}),
                "tool_calls",
            ),
        };
        json!({
            "id": completion_id(),
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": json!(self.usage()),
        })
    }

    fn stream(
        &self,
        model: &str,
        include_usage: bool,
    ) -> futures_util::stream::BoxStream<'static, Result<Bytes, CallError>> {
        let id = completion_id();
        let created = now();
        let chunk = |delta: Value, finish: Option<&str>| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        };
        let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        let finish = match self {
            Self::Text { text, .. } => {
                let mut words = text.split_inclusive(' ');
                chunks.extend(words.by_ref().map(|w| chunk(json!({"content": w}), None)));
                "stop"
            }
            Self::ToolCall { name, .. } => {
                let mut call = Self::tool_call(name);
                call["index"] = json!(0);
                chunks.push(chunk(json!({"tool_calls": [call]}), None));
                "tool_calls"
            }
        };
        chunks.push(chunk(json!({}), Some(finish)));
        if include_usage {
            chunks.push(json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": json!(self.usage()),
            }));
        }
        let mut events: Vec<Result<Bytes, CallError>> = chunks
            .into_iter()
            .map(|c| Ok(Bytes::from(format!("data: {c}\n\n"))))
            .collect();
        events.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
        stream::iter(events).boxed()
    }
}

/// The text of a message's `content`: a string, or the text parts of a part list.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn embeddings(body: &Value, model: &str, default_dimensions: u32) -> (Bytes, Usage) {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Value::Array(items.clone()).to_string()]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![String::new()],
    };
    let dimensions = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .filter(|d| (1..=8192).contains(d))
        .unwrap_or(if default_dimensions == 0 {
            DEFAULT_DIMENSIONS
        } else {
            default_dimensions
        });
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += (text.len() as u64 / 4).max(1);
            let vector = unit_vector(text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let usage = Usage {
        prompt_tokens: tokens,
        completion_tokens: 0,
        total_tokens: tokens,
        ..Usage::default()
    };
    let response = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    (Bytes::from(response.to_string()), usage)
}

/// A deterministic unit vector seeded by the text's hash.
fn unit_vector(text: &str, dimensions: u32) -> Vec<f32> {
    let digest = Sha256::digest(text.as_bytes());
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest[..8]);
    let mut rng = fastrand::Rng::with_seed(u64::from_le_bytes(seed));
    let raw: Vec<f32> = (0..dimensions).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = raw
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|v| v / norm).collect()
}

fn images(body: &Value) -> Bytes {
    let n = body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let as_url = body.get("response_format").and_then(Value::as_str) == Some("url");
    let item = if as_url {
        json!({"url": format!("data:image/png;base64,{PIXEL_PNG}")})
    } else {
        json!({"b64_json": PIXEL_PNG})
    };
    let data: Vec<Value> = (0..n).map(|_| item.clone()).collect();
    Bytes::from(json!({"created": now(), "data": data}).to_string())
}

fn completion_id() -> String {
    format!("chatcmpl-mock{:016x}", fastrand::u64(..))
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}
