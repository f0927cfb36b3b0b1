//! The fake's deterministic OpenAI answers (its own implementation, independent of the gateway's
//! built-in mock, so tests compare two separate readings of the wire format).

use base64::Engine as _;
use serde_json::{Value, json};

pub const CHAT_PREFIX: &str = "Hello from fake-provider! You said: ";
/// What the assistant answers in JSON mode.
pub const JSON_ANSWER: &str = r#"{"answer":"fake"}"#;
const TINY_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

/// What the assistant answers: text, or a call of the first tool.
pub enum Answer {
    Text(String),
    Tool(String),
}

pub fn answer(request: &Value) -> Answer {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last = messages.last();
    let role = |m: Option<&Value>| {
        m.and_then(|m| m.get("role"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let first_tool = request
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.pointer("/function/name"))
        .and_then(Value::as_str);
    if let Some(name) = first_tool
        && role(last).as_deref() != Some("tool")
    {
        return Answer::Tool(name.to_owned());
    }
    if role(last).as_deref() == Some("tool") {
        return Answer::Text(format!("tool result received: {}", content_text(last)));
    }
    let format = request
        .pointer("/response_format/type")
        .and_then(Value::as_str);
    if matches!(format, Some("json_object" | "json_schema")) {
        return Answer::Text(JSON_ANSWER.to_owned());
    }
    let user = messages
        .iter()
        .rev()
        .find(|m| role(Some(m)).as_deref() == Some("user"));
    Answer::Text(format!("{CHAT_PREFIX}{}", content_text(user)))
}

fn content_text(message: Option<&Value>) -> String {
    match message.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The prompt's token count, estimated from the size of its messages.
pub fn prompt_tokens(request: &Value) -> u64 {
    (request
        .get("messages")
        .map(|m| m.to_string().len())
        .unwrap_or(0) as u64
        / 4)
    .max(1)
}

fn usage(request: &Value, completion: u64) -> Value {
    let prompt = prompt_tokens(request);
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The pieces a text streams in: word by word, each but the last with its trailing space.
pub fn pieces(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split(' ').collect();
    let count = words.len();
    words
        .into_iter()
        .enumerate()
        .map(|(i, word)| {
            if i + 1 < count {
                format!("{word} ")
            } else {
                word.to_owned()
            }
        })
        .collect()
}

fn model(request: &Value) -> Value {
    request.get("model").cloned().unwrap_or(json!("fake-model"))
}

pub fn chat_completion(request: &Value) -> Value {
    let (message, finish, completion) = match answer(request) {
        Answer::Text(text) => {
            let words = text.split(' ').count() as u64;
            (
                json!({"role": "assistant", "content": text, "refusal": null}),
                "stop",
                words,
            )
        }
        Answer::Tool(name) => (
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_fake_0", "type": "function", "function": {"name": name, "arguments": "{}"}}
            ]}),
            "tool_calls",
            1,
        ),
    };
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model(request),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage(request, completion),
        "system_fingerprint": "fp_fake",
    })
}

/// The SSE events (without `data: ` framing) of a streamed completion, `[DONE]` excluded.
pub fn chat_chunks(request: &Value) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": model(request), "system_fingerprint": "fp_fake",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let (finish, completion) = match answer(request) {
        Answer::Text(text) => {
            let pieces = pieces(&text);
            let count = pieces.len();
            for piece in pieces {
                chunks.push(chunk(json!({"content": piece}), Value::Null));
            }
            ("stop", count as u64)
        }
        Answer::Tool(name) => {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_fake_0", "type": "function",
                                       "function": {"name": name, "arguments": "{}"}}]}),
                Value::Null,
            ));
            ("tool_calls", 1)
        }
    };
    chunks.push(chunk(json!({}), json!(finish)));
    if request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
    {
        chunks.push(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                           "model": model(request), "system_fingerprint": "fp_fake", "choices": [],
                           "usage": usage(request, completion)}));
    }
    chunks
}

pub fn embeddings(request: &Value) -> Value {
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(other) => vec![other.to_string()],
        None => vec![String::new()],
    };
    let dimensions = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(8) as usize;
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = (0..inputs.len())
        .map(|index| {
            // Deterministic, easy to check by hand: component i of input k is (k + 1) / (i + 2).
            let vector: Vec<f32> = (0..dimensions)
                .map(|i| (index as f32 + 1.0) / (i as f32 + 2.0))
                .collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = inputs
        .iter()
        .map(|t| (t.len() as u64 / 4).max(1))
        .sum::<u64>();
    json!({"object": "list", "data": data, "model": model(request),
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

pub fn images(request: &Value) -> Value {
    let n = request.get("n").and_then(Value::as_u64).unwrap_or(1);
    let as_url = request.get("response_format").and_then(Value::as_str) == Some("url");
    let item = if as_url {
        json!({"url": "https://images.fake.invalid/1.png"})
    } else {
        json!({"b64_json": TINY_PNG})
    };
    json!({"created": 1_700_000_000, "data": vec![item; n as usize]})
}

pub fn models() -> Value {
    json!({"object": "list", "data": [
        {"id": "fake-model", "object": "model", "created": 1_700_000_000, "owned_by": "fake-provider"}
    ]})
}

pub fn error_body(status: u16) -> Value {
    let (kind, code) = match status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        _ => ("server_error", Value::Null),
    };
    json!({"error": {"message": format!("fake-provider scripted status {status}"), "type": kind, "param": null, "code": code}})
}
