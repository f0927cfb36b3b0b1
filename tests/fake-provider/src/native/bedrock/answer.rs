//! Converse answers, written: complete (`ConverseResponse`) and streamed (event-stream frames
//! from `messageStart` to `metadata`, tool input streamed as fragments of JSON text, every
//! payload padded with a `p` member as Bedrock's are).

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::frames;
use crate::{
    native::Reply,
    reply::{self, Answer},
};

/// The id of the fake's tool calls.
const TOOL_USE_ID: &str = "tooluse_fake_0";

pub fn complete(openai: &Value, native: &Value) -> Reply {
    let (content, stop_reason, output_tokens) = match reply::answer(openai) {
        Answer::Text(text) => {
            let words = text.split(' ').count() as u64;
            (json!([{"text": text}]), "end_turn", words)
        }
        Answer::Tool(name) => (
            json!([{"toolUse": {"toolUseId": TOOL_USE_ID, "name": name, "input": {}}}]),
            "tool_use",
            1,
        ),
    };
    Reply::json(
        StatusCode::OK,
        json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": usage(native, output_tokens),
            "metrics": {"latencyMs": 1},
        }),
    )
}

pub fn stream(openai: &Value, native: &Value) -> Reply {
    let mut events = vec![("messageStart", json!({"role": "assistant"}))];
    let (stop_reason, output_tokens) = match reply::answer(openai) {
        Answer::Text(text) => {
            let words: Vec<&str> = text.split(' ').collect();
            let count = words.len();
            for (i, word) in words.into_iter().enumerate() {
                let piece = if i + 1 < count {
                    format!("{word} ")
                } else {
                    word.to_owned()
                };
                events.push((
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
                ));
            }
            events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
            ("end_turn", count as u64)
        }
        Answer::Tool(name) => {
            events.push((
                "contentBlockStart",
                json!({"contentBlockIndex": 0,
                       "start": {"toolUse": {"toolUseId": TOOL_USE_ID, "name": name}}}),
            ));
            for fragment in ["{", "}"] {
                events.push((
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": fragment}}}),
                ));
            }
            events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
            ("tool_use", 1)
        }
    };
    events.push(("messageStop", json!({"stopReason": stop_reason})));
    events.push((
        "metadata",
        json!({"usage": usage(native, output_tokens), "metrics": {"latencyMs": 1}}),
    ));
    let frames: Vec<Bytes> = events
        .into_iter()
        .enumerate()
        .map(|(i, (name, mut payload))| {
            payload["p"] = json!(&"abcdefghijklmnopqrstuvwxyz"[..1 + i * 7 % 26]);
            frames::event(name, &payload)
        })
        .collect();
    Reply::Stream {
        content_type: "application/vnd.amazon.eventstream",
        frames,
        error: frames::exception(
            "internalServerException",
            "fake-provider scripted stream error",
        ),
    }
}

/// Converse's `TokenUsage`: about four characters a token.
fn usage(native: &Value, output_tokens: u64) -> Value {
    let prompt = native.get("messages").map_or(0, |m| m.to_string().len()) as u64 / 4;
    let input_tokens = prompt.max(1);
    json!({"inputTokens": input_tokens, "outputTokens": output_tokens,
           "totalTokens": input_tokens + output_tokens})
}
