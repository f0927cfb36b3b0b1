//! Answers in Anthropic's format: a `Message`, its SSE event sequence, and error bodies.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::Reply;
use crate::native::sse_event;

const REQUEST_ID: &str = "req_011CfakeProviderRequest";

/// Headers every Anthropic answer carries.
pub fn headers() -> Vec<(&'static str, String)> {
    vec![("request-id", REQUEST_ID.to_owned())]
}

/// The `Message` for the fake's OpenAI `completion`.
pub fn message(completion: &Value, model: &str) -> Value {
    let choice = &completion["choices"][0];
    let mut content = Vec::new();
    if let Some(text) = choice.pointer("/message/content").and_then(Value::as_str) {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = choice
        .pointer("/message/tool_calls")
        .and_then(Value::as_array);
    for (n, call) in calls.into_iter().flatten().enumerate() {
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str);
        let input: Value = arguments
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": format!("toolu_fake_{n}"),
                            "name": call["function"]["name"], "input": input}));
    }
    let stop_reason = match choice["finish_reason"].as_str() {
        Some("tool_calls") => "tool_use",
        Some("length") => "max_tokens",
        _ => "end_turn",
    };
    json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {
            "input_tokens": completion["usage"]["prompt_tokens"],
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": completion["usage"]["completion_tokens"],
        },
    })
}

/// `message` as its event sequence: `message_start` (input usage), a `ping`, each block's
/// start, deltas (text word by word, tool arguments in several `input_json_delta` fragments,
/// the first empty as Anthropic sends it) and stop, `message_delta` (stop reason, cumulative
/// output usage) and `message_stop`.
pub fn stream(message: &Value) -> Reply {
    let mut started = message.clone();
    started["content"] = json!([]);
    started["stop_reason"] = Value::Null;
    started["usage"]["output_tokens"] = json!(1);
    let mut frames = vec![
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": started}),
        ),
        sse_event("ping", &json!({"type": "ping"})),
    ];
    for (index, block) in message["content"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (start, deltas) = match block["type"].as_str() {
            Some("tool_use") => {
                let mut start = block.clone();
                start["input"] = json!({});
                let arguments = block["input"].to_string();
                let mut middle = arguments.len() / 2;
                while !arguments.is_char_boundary(middle) {
                    middle -= 1;
                }
                let (head, tail) = arguments.split_at(middle);
                let deltas: Vec<Value> = ["", head, tail]
                    .iter()
                    .map(|f| json!({"type": "input_json_delta", "partial_json": f}))
                    .collect();
                (start, deltas)
            }
            _ => {
                let text = block["text"].as_str().unwrap_or_default();
                let deltas = text
                    .split_inclusive(' ')
                    .map(|word| json!({"type": "text_delta", "text": word}))
                    .collect();
                (json!({"type": "text", "text": ""}), deltas)
            }
        };
        frames.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            frames.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        frames.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    frames.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": null},
                "usage": {"output_tokens": message["usage"]["output_tokens"]}}),
    ));
    frames.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    Reply::Stream {
        content_type: "text/event-stream",
        frames,
        error: stream_error(),
    }
}

/// What Anthropic sends when it fails mid-stream (an overload, most often).
fn stream_error() -> Bytes {
    sse_event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                "request_id": REQUEST_ID}),
    )
}

/// An error answer in Anthropic's shape.
pub fn refusal(status: StatusCode, kind: &str, message: &str) -> Reply {
    Reply::Json {
        status,
        body: json!({"type": "error", "error": {"type": kind, "message": message},
                     "request_id": REQUEST_ID}),
        headers: headers(),
    }
}

/// A 400 `invalid_request_error`.
pub fn invalid(message: impl AsRef<str>) -> Reply {
    refusal(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message.as_ref(),
    )
}

/// The scripted error `status`, with Anthropic's error type for it; a 429 says when to retry.
pub fn error(status: u16) -> Reply {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let message = format!("fake-provider scripted status {status}");
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut reply = refusal(code, kind, &message);
    if let (Reply::Json { headers, .. }, 429) = (&mut reply, status) {
        headers.push(("retry-after", "1".to_owned()));
        headers.push(("anthropic-ratelimit-requests-remaining", "0".to_owned()));
    }
    reply
}
