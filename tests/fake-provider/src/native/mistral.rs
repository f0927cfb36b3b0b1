//! Mistral's API, served under `/mistral/v1/...` (it shares OpenAI's paths, so tests point a
//! deployment's `baseUrl` at `http://<fake>/mistral/v1`). As strict as Mistral: its request
//! schemas are closed, so any member outside them is a 422 `{"detail":[...]}`, and a tool-call id
//! that is not nine ASCII letters and digits is a 400. Streams carry the usage on the finish chunk
//! (never a separate usage chunk, and `stream_options` is refused) and whole tool calls in one
//! delta.

use http::StatusCode;
use serde_json::{Value, json};

use super::{Dialect, Reply, Req, sse_data};
use crate::reply::{self, Answer};

pub static DIALECT: Dialect = Dialect {
    name: "mistral",
    matches: |path| path.starts_with("/mistral/"),
    reply: answer,
    error: |status| match status {
        422 => invalid(vec![json!({"type": "missing", "loc": ["body", "messages"],
                                   "msg": "Field required", "input": {}})]),
        _ => error_with_headers(status, &format!("fake-provider scripted status {status}")),
    },
};

const CHAT_MEMBERS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "prediction",
    "parallel_tool_calls",
    "prompt_mode",
    "reasoning_effort",
    "safe_prompt",
    "guardrails",
    "metadata",
];

const EMBED_MEMBERS: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "output_dimension",
    "output_dtype",
    "metadata",
];

/// The members each message role takes.
fn message_members(role: &str) -> Option<&'static [&'static str]> {
    match role {
        "system" | "user" => Some(&["role", "content"]),
        "assistant" => Some(&["role", "content", "tool_calls", "prefix"]),
        "tool" => Some(&["role", "content", "tool_call_id", "name"]),
        _ => None,
    }
}

fn answer(req: &Req<'_>) -> Reply {
    if req.bearer().is_none() {
        return Reply::json(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Unauthorized", "request_id": "fake-mistral-request"}),
        );
    }
    let Some(body) = req.json() else {
        return invalid(vec![json!({"type": "json_invalid", "loc": ["body", 0],
                                   "msg": "JSON decode error", "input": {}})]);
    };
    match req.path.strip_prefix("/mistral") {
        Some("/v1/chat/completions") => chat(body),
        Some("/v1/embeddings") => embeddings(body),
        Some("/v1/models") => Reply::json(StatusCode::OK, reply::models()),
        _ => error_with_headers(404, "Not Found"),
    }
}

fn chat(body: &Value) -> Reply {
    let mut problems = extra_members(body, CHAT_MEMBERS, &[json!("body")]);
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        match message_members(role) {
            Some(allowed) => problems.extend(extra_members(
                message,
                allowed,
                &[json!("body"), json!("messages"), json!(i), json!(role)],
            )),
            None => problems.push(json!({"type": "union_tag_invalid", "loc": ["body", "messages", i],
                "msg": format!("Input tag '{role}' found using 'role' does not match any of the expected tags: 'system', 'user', 'assistant', 'tool'"),
                "input": message})),
        }
    }
    if !problems.is_empty() {
        return invalid(problems);
    }
    if let Some(id) = foreign_tool_call_id(&messages) {
        return error(
            400,
            &format!("Tool call id was {id} but must be a-z, A-Z, 0-9, with a length of 9."),
        );
    }
    let prompt = reply::prompt_tokens(body);
    let answer = reply::answer(body);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(body, prompt, answer);
    }
    let (message, finish, completion) = match answer {
        Answer::Text(text) => {
            let words = text.split(' ').count() as u64;
            (
                json!({"role": "assistant", "content": text, "tool_calls": null, "prefix": false}),
                "stop",
                words,
            )
        }
        Answer::Tool(name) => (
            json!({"role": "assistant", "content": "", "prefix": false,
                   "tool_calls": [{"id": CALL_ID, "type": "function", "index": 0,
                                   "function": {"name": name, "arguments": "{}"}}]}),
            "tool_calls",
            1,
        ),
    };
    Reply::json(
        StatusCode::OK,
        json!({"id": "cmpl-fakemistral", "object": "chat.completion", "created": 1_700_000_000,
               "model": model(body), "choices": [{"index": 0, "message": message, "finish_reason": finish}],
               "usage": usage(prompt, completion)}),
    )
}

/// Mistral's own tool-call ids: nine ASCII letters and digits.
const CALL_ID: &str = "FakeCall0";

fn is_mistral_id(id: &str) -> bool {
    id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The first tool-call id in the history Mistral would refuse.
fn foreign_tool_call_id(messages: &[Value]) -> Option<String> {
    let calls = messages
        .iter()
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .filter_map(|call| call.get("id").and_then(Value::as_str));
    let results = messages
        .iter()
        .filter_map(|m| m.get("tool_call_id").and_then(Value::as_str));
    calls
        .chain(results)
        .find(|id| !is_mistral_id(id))
        .map(str::to_owned)
}

fn stream(body: &Value, prompt: u64, answer: Answer) -> Reply {
    let model = model(body);
    let chunk = |delta: Value, finish: Value, usage: Option<Value>| {
        let mut chunk = json!({"id": "cmpl-fakemistral", "object": "chat.completion.chunk",
                               "created": 1_700_000_000, "model": model,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        chunk
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
        None,
    )];
    match answer {
        Answer::Text(text) => {
            let pieces = reply::pieces(&text);
            let count = pieces.len() as u64;
            for piece in pieces {
                chunks.push(chunk(json!({"content": piece}), Value::Null, None));
            }
            chunks.push(chunk(
                json!({"content": ""}),
                json!("stop"),
                Some(usage(prompt, count)),
            ));
        }
        // A whole call in one delta, with the finish reason and the usage.
        Answer::Tool(name) => chunks.push(chunk(
            json!({"content": null, "tool_calls": [{"id": CALL_ID, "type": "function", "index": 0,
                                                    "function": {"name": name, "arguments": "{}"}}]}),
            json!("tool_calls"),
            Some(usage(prompt, 1)),
        )),
    }
    let mut frames: Vec<_> = chunks.iter().map(sse_data).collect();
    frames.push(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::Stream {
        content_type: "text/event-stream",
        frames,
        error: sse_data(
            &json!({"object": "error", "message": "fake-provider scripted failure",
                                "type": "internal_server_error", "param": null, "code": "3000"}),
        ),
    }
}

fn embeddings(body: &Value) -> Reply {
    let problems = extra_members(body, EMBED_MEMBERS, &[json!("body")]);
    if !problems.is_empty() {
        return invalid(problems);
    }
    let mut request = json!({"model": model(body), "input": body.get("input")});
    if let Some(dimension) = body.get("output_dimension") {
        request["dimensions"] = dimension.clone();
    }
    if let Some(format) = body.get("encoding_format") {
        request["encoding_format"] = format.clone();
    }
    let mut answer = reply::embeddings(&request);
    answer["id"] = json!("embd-fakemistral");
    answer["usage"]["completion_tokens"] = json!(0);
    Reply::json(StatusCode::OK, answer)
}

/// A 422 entry for each member of `object` outside `allowed`.
fn extra_members(object: &Value, allowed: &[&str], location: &[Value]) -> Vec<Value> {
    object
        .as_object()
        .map(|members| {
            members
                .iter()
                .filter(|(key, _)| !allowed.contains(&key.as_str()))
                .map(|(key, value)| {
                    let mut loc = location.to_vec();
                    loc.push(json!(key));
                    json!({"type": "extra_forbidden", "loc": loc,
                           "msg": "Extra inputs are not permitted", "input": value})
                })
                .collect()
        })
        .unwrap_or_default()
}

fn model(body: &Value) -> Value {
    body.get("model").cloned().unwrap_or(json!("mistral-fake"))
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion})
}

fn invalid(detail: Vec<Value>) -> Reply {
    Reply::json(StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": detail}))
}

fn error(status: u16, message: &str) -> Reply {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "unauthorized",
        404 => "not_found",
        429 => "rate_limited",
        503 => "service_unavailable",
        _ => "internal_server_error",
    };
    Reply::json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"object": "error", "message": message, "type": kind, "param": null,
               "code": null, "raw_status_code": status}),
    )
}

/// An error with the headers Mistral sends with it (a 429 says when to retry).
fn error_with_headers(status: u16, message: &str) -> Reply {
    match error(status, message) {
        Reply::Json { status, body, .. } if status == StatusCode::TOO_MANY_REQUESTS => {
            Reply::Json {
                status,
                body,
                headers: vec![("retry-after", "1".to_owned())],
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(body: Value) -> Reply {
        let path = "/mistral/v1/chat/completions";
        super::super::answer_to(
            answer,
            path,
            "",
            &[("authorization", "Bearer m-key")],
            &body,
        )
    }

    fn status_and_body(reply: Reply) -> (StatusCode, Value) {
        match reply {
            Reply::Json { status, body, .. } => (status, body),
            Reply::Stream { .. } => (StatusCode::OK, Value::Null),
        }
    }

    #[test]
    fn refuses_members_outside_the_schema_like_mistral() {
        let (status, body) = status_and_body(call(json!({"model": "m", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi", "name": "alice"}]})));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["detail"][0]["loc"], json!(["body", "stream_options"]));
        assert_eq!(
            body["detail"][1]["loc"],
            json!(["body", "messages", 0, "user", "name"])
        );
        let (status, _) = status_and_body(call(
            json!({"model": "m", "messages": [{"role": "developer", "content": "x"}]}),
        ));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn refuses_tool_call_ids_that_are_not_nine_alphanumerics() {
        let history = |id: &str| {
            json!({"model": "m", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": id, "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": id, "content": "ok"}]})
        };
        let (status, body) = status_and_body(call(history("call_0fypS1hVX")));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"].as_str().unwrap().contains("call_0fypS1hVX"));
        let (status, body) = status_and_body(call(history("D681PevKs")));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .starts_with("tool result received")
        );
    }

    #[test]
    fn streams_usage_on_the_finish_chunk_only() {
        let Reply::Stream { frames, .. } = call(json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "a b"}]}))
        else {
            panic!("not a stream");
        };
        let events: Vec<String> = frames
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let finish = &events[events.len() - 2];
        assert!(finish.contains(r#""finish_reason":"stop""#) && finish.contains(r#""usage""#));
        assert_eq!(events.iter().filter(|e| e.contains("usage")).count(), 1);
    }
}
