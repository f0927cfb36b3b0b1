//! OpenAI's Responses API (`POST /v1/responses`): the request read into the OpenAI chat shape
//! `reply::answer` decides on, the answer written as a response object or its event stream.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Dialect, Reply, Req};
use crate::reply::{self, Answer};

pub static DIALECT: Dialect = Dialect {
    name: "responses",
    matches: |path| path.ends_with("/responses"),
    reply: answer,
    error: |status| {
        Reply::json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            reply::error_body(status),
        )
    },
};

/// The request's items as chat messages, tools as chat functions, `text.format` as
/// `response_format`.
fn as_chat(body: &Value) -> Value {
    let mut messages = Vec::new();
    match body.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for item in items {
                match item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message")
                {
                    "function_call_output" => messages.push(json!({
                        "role": "tool",
                        "content": item.get("output").cloned().unwrap_or(Value::Null),
                    })),
                    "function_call" => messages.push(json!({"role": "assistant", "content": null})),
                    _ => {
                        let text = match item.get("content") {
                            Some(Value::String(text)) => text.clone(),
                            Some(Value::Array(parts)) => parts
                                .iter()
                                .filter_map(|p| p.get("text").and_then(Value::as_str))
                                .collect::<Vec<_>>()
                                .join(" "),
                            _ => String::new(),
                        };
                        messages.push(json!({"role": item.get("role").cloned().unwrap_or(json!("user")), "content": text}));
                    }
                }
            }
        }
        _ => {}
    }
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .map(|t| json!({"type": "function", "function": {"name": t.get("name").cloned().unwrap_or(Value::Null)}}))
        .collect();
    let mut chat = json!({"messages": messages});
    if !tools.is_empty() {
        chat["tools"] = Value::Array(tools);
    }
    if let Some(format) = body.pointer("/text/format/type") {
        chat["response_format"] = json!({"type": format});
    }
    chat
}

fn answer(req: &Req<'_>) -> Reply {
    let body = req.body;
    if body.get("model").and_then(Value::as_str).is_none() || body.get("input").is_none() {
        return Reply::json(StatusCode::BAD_REQUEST, reply::error_body(400));
    }
    let chat = as_chat(body);
    let model = body["model"].clone();
    let input_tokens = reply::prompt_tokens(&chat);
    let (item, deltas) = match reply::answer(&chat) {
        Answer::Text(text) => (
            json!({"type": "message", "id": "msg_fake_1", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}),
            reply::pieces(&text),
        ),
        Answer::Tool(name) => (
            json!({"type": "function_call", "id": "fc_fake_1", "call_id": "call_fake_1", "name": name,
                   "arguments": "{\"city\":\"Paris\"}", "status": "completed"}),
            vec!["{\"city\":".to_owned(), "\"Paris\"}".to_owned()],
        ),
    };
    let output_tokens = deltas.len() as u64;
    let response = |status: &str, output: Vec<Value>, usage: Value| {
        json!({"id": "resp_fake_1", "object": "response", "created_at": 1_700_000_000, "status": status,
               "model": model, "output": output, "usage": usage, "error": null, "incomplete_details": null,
               "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "store": false})
    };
    let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
                       "total_tokens": input_tokens + output_tokens,
                       "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
    if !req.stream_flag() {
        return Reply::json(StatusCode::OK, response("completed", vec![item], usage));
    }
    let mut events = Vec::new();
    let mut push = |data: Value| events.push(data);
    push(
        json!({"type": "response.created", "response": response("in_progress", vec![], Value::Null)}),
    );
    push(
        json!({"type": "response.in_progress", "response": response("in_progress", vec![], Value::Null)}),
    );
    let mut open = item.clone();
    open["status"] = json!("in_progress");
    if item["type"] == "message" {
        open["content"] = json!([]);
        push(json!({"type": "response.output_item.added", "output_index": 0, "item": open}));
        push(
            json!({"type": "response.content_part.added", "item_id": "msg_fake_1", "output_index": 0,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        for delta in &deltas {
            push(
                json!({"type": "response.output_text.delta", "item_id": "msg_fake_1", "output_index": 0,
                        "content_index": 0, "delta": delta, "logprobs": []}),
            );
        }
        push(
            json!({"type": "response.output_text.done", "item_id": "msg_fake_1", "output_index": 0,
                    "content_index": 0, "text": item["content"][0]["text"], "logprobs": []}),
        );
        push(
            json!({"type": "response.content_part.done", "item_id": "msg_fake_1", "output_index": 0,
                    "content_index": 0, "part": item["content"][0]}),
        );
    } else {
        open["arguments"] = json!("");
        push(json!({"type": "response.output_item.added", "output_index": 0, "item": open}));
        for delta in &deltas {
            push(
                json!({"type": "response.function_call_arguments.delta", "item_id": "fc_fake_1",
                        "output_index": 0, "delta": delta}),
            );
        }
        push(
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_fake_1",
                    "output_index": 0, "arguments": item["arguments"]}),
        );
    }
    push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    push(
        json!({"type": "response.completed", "response": response("completed", vec![item.clone()], usage)}),
    );
    let frames = events
        .iter()
        .enumerate()
        .map(|(n, event)| {
            let mut event = event.clone();
            event["sequence_number"] = json!(n);
            Bytes::from(format!(
                "event: {}\ndata: {event}\n\n",
                event["type"].as_str().unwrap_or_default()
            ))
        })
        .collect();
    Reply::Stream {
        content_type: "text/event-stream",
        frames,
        error: Bytes::from_static(
            b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error.\",\"param\":null}\n\n",
        ),
    }
}
