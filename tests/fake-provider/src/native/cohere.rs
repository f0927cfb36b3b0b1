//! Cohere's v2 API: `POST /v2/chat` (JSON, or SSE with named events), `POST /v2/embed`, and
//! errors as `{"id","message"}`. Like Cohere it wants a Bearer key, `model` and `messages`, a
//! known role on every message, `REQUIRED`/`NONE` as the only tool choices, no JSON mode next to
//! tools, and `input_type` on every embed call.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Dialect, Reply, Req, sse_event};
use crate::reply::{self, Answer};

pub static DIALECT: Dialect = Dialect {
    name: "cohere",
    matches: |path| path.starts_with("/v2/"),
    reply: answer,
    error: |status| {
        let message = match status {
            429 => {
                "You are using a Trial key, which is limited to 20 API calls / minute.".to_owned()
            }
            498 => "blocked output: the response contains a deny-listed token".to_owned(),
            _ => format!("fake-provider scripted status {status}"),
        };
        error(status, &message)
    },
};

const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

fn answer(req: &Req<'_>) -> Reply {
    if req.bearer().is_none() {
        return error(401, "invalid api token");
    }
    let Some(body) = req.json() else {
        return error(400, "invalid request: the body is not valid JSON");
    };
    match req.path {
        "/v2/chat" => chat(body),
        "/v2/embed" => embed(body),
        _ => error(404, &format!("{} is not a known endpoint", req.path)),
    }
}

fn chat(body: &Value) -> Reply {
    if let Err(problem) = check_chat(body) {
        return error(400, &format!("invalid request: {problem}"));
    }
    let request = openai_request(body);
    let (prompt, id) = (reply::prompt_tokens(&request), "fake-cohere-chat");
    let answer = reply::answer(&request);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(id, prompt, answer);
    }
    let (message, finish, completion) = match answer {
        Answer::Text(text) => {
            let words = text.split(' ').count() as u64;
            (
                json!({"role": "assistant", "content": [{"type": "text", "text": text}]}),
                "COMPLETE",
                words,
            )
        }
        Answer::Tool(name) => (
            json!({"role": "assistant", "tool_plan": format!("I will call {name}."),
                   "tool_calls": [{"id": call_id(&name), "type": "function",
                                   "function": {"name": name, "arguments": "{}"}}]}),
            "TOOL_CALL",
            1,
        ),
    };
    Reply::json(
        StatusCode::OK,
        json!({"id": id, "finish_reason": finish, "message": message, "usage": usage(prompt, completion)}),
    )
}

/// What Cohere itself refuses in a chat request.
fn check_chat(body: &Value) -> Result<(), String> {
    if body.get("model").and_then(Value::as_str).is_none() {
        return Err("model is required".to_owned());
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("messages is required".to_owned());
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        if !ROLES.contains(&role) {
            return Err(format!("messages[{i}]: unknown role '{role}'"));
        }
    }
    match body.get("tool_choice").and_then(Value::as_str) {
        None | Some("REQUIRED" | "NONE") => {}
        Some(other) => return Err(format!("tool_choice must be REQUIRED or NONE, not {other}")),
    }
    let has_tools = body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if has_tools && body.get("response_format").is_some() {
        return Err("response_format cannot be used with tools".to_owned());
    }
    Ok(())
}

/// The OpenAI-shaped request `reply::answer` reads: tool results' document blocks as text, and
/// no tools when the choice is `NONE`.
fn openai_request(body: &Value) -> Value {
    let messages: Vec<Value> = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .map(|m| {
                    let mut message = m.clone();
                    if let Some(Value::Array(blocks)) = m.get("content") {
                        let text: Vec<&str> = blocks
                            .iter()
                            .filter_map(|b| {
                                b.get("text")
                                    .or_else(|| b.pointer("/document/data"))
                                    .and_then(Value::as_str)
                            })
                            .collect();
                        message["content"] = json!(text.join(" "));
                    }
                    message
                })
                .collect()
        })
        .unwrap_or_default();
    let mut request = json!({"model": body.get("model"), "messages": messages});
    if body.get("tool_choice").and_then(Value::as_str) != Some("NONE")
        && let Some(tools) = body.get("tools")
    {
        request["tools"] = tools.clone();
    }
    if let Some(format) = body.get("response_format") {
        request["response_format"] = format.clone();
    }
    request
}

fn stream(id: &str, prompt: u64, answer: Answer) -> Reply {
    let mut frames = vec![event(
        "message-start",
        json!({"id": id, "delta": {"message": {"role": "assistant"}}}),
    )];
    let (finish, completion) = match answer {
        Answer::Text(text) => {
            frames.push(event(
                "content-start",
                json!({"index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
            ));
            let pieces = reply::pieces(&text);
            let count = pieces.len() as u64;
            for piece in pieces {
                frames.push(event(
                    "content-delta",
                    json!({"index": 0, "delta": {"message": {"content": {"text": piece}}}}),
                ));
            }
            frames.push(event("content-end", json!({"index": 0})));
            ("COMPLETE", count)
        }
        Answer::Tool(name) => {
            frames.push(event(
                "tool-plan-delta",
                json!({"delta": {"message": {"tool_plan": format!("I will call {name}.")}}}),
            ));
            frames.push(event(
                "tool-call-start",
                json!({"index": 0, "delta": {"message": {"tool_calls": {
                    "id": call_id(&name), "type": "function",
                    "function": {"name": name, "arguments": ""}}}}}),
            ));
            for fragment in ["{", "}"] {
                frames.push(event(
                    "tool-call-delta",
                    json!({"index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": fragment}}}}}),
                ));
            }
            frames.push(event("tool-call-end", json!({"index": 0})));
            ("TOOL_CALL", 1)
        }
    };
    frames.push(event(
        "message-end",
        json!({"delta": {"finish_reason": finish, "usage": usage(prompt, completion)}}),
    ));
    Reply::Stream {
        content_type: "text/event-stream",
        frames,
        error: event(
            "message-end",
            json!({"delta": {"error": "fake-provider scripted failure", "finish_reason": "ERROR"}}),
        ),
    }
}

/// `event: <type>` with the type repeated in the data, as Cohere sends it.
fn event(kind: &str, mut data: Value) -> Bytes {
    data["type"] = json!(kind);
    sse_event(kind, &data)
}

fn embed(body: &Value) -> Reply {
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return error(400, "invalid request: model is required");
    };
    let Some(texts) = body.get("texts").and_then(Value::as_array) else {
        return error(
            400,
            "invalid request: texts, images or inputs must be provided",
        );
    };
    if body.get("input_type").and_then(Value::as_str).is_none() {
        return error(
            400,
            "invalid request: valid input_type must be provided with the provided model",
        );
    }
    if texts.len() > 96 {
        return error(
            400,
            "invalid request: too many texts, at most 96 are allowed",
        );
    }
    let wants_float = body
        .get("embedding_types")
        .and_then(Value::as_array)
        .is_none_or(|types| types.iter().any(|t| t == "float"));
    let mut request = json!({"model": model, "input": texts});
    if let Some(dimension) = body.get("output_dimension") {
        request["dimensions"] = dimension.clone();
    }
    let openai = reply::embeddings(&request);
    let vectors: Vec<Value> = openai["data"]
        .as_array()
        .map(|data| data.iter().map(|d| d["embedding"].clone()).collect())
        .unwrap_or_default();
    let embeddings = if wants_float {
        json!({"float": vectors})
    } else {
        json!({})
    };
    Reply::json(
        StatusCode::OK,
        json!({"id": "fake-cohere-embed", "embeddings": embeddings, "texts": texts,
               "meta": {"api_version": {"version": "2"},
                        "billed_units": {"input_tokens": openai["usage"]["prompt_tokens"]}},
               "response_type": "embeddings_by_type"}),
    )
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"billed_units": {"input_tokens": prompt, "output_tokens": completion},
           "tokens": {"input_tokens": prompt, "output_tokens": completion},
           "cached_tokens": 0})
}

/// Cohere's tool-call ids: the function's name and a suffix.
fn call_id(name: &str) -> String {
    format!("{name}_fake0call0")
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"id": "fake-cohere-error", "message": message}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str, body: Value) -> Reply {
        super::super::answer_to(
            answer,
            path,
            "",
            &[("authorization", "Bearer co-key")],
            &body,
        )
    }

    fn json_of(reply: Reply) -> (StatusCode, Value) {
        match reply {
            Reply::Json { status, body, .. } => (status, body),
            Reply::Stream { .. } => panic!("a stream"),
        }
    }

    #[test]
    fn chats_in_cohere_shapes_and_refuses_what_cohere_refuses() {
        let (status, body) = json_of(call(
            "/v2/chat",
            json!({"model": "command-a", "messages": [{"role": "user", "content": "hi"}]}),
        ));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["finish_reason"], "COMPLETE");
        assert_eq!(
            body["message"]["content"][0]["text"],
            format!("{}hi", reply::CHAT_PREFIX)
        );
        let (_, tool) = json_of(call(
            "/v2/chat",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
        ));
        assert_eq!(tool["finish_reason"], "TOOL_CALL");
        assert_eq!(tool["message"]["tool_calls"][0]["function"]["name"], "f");
        let (status, _) = json_of(call(
            "/v2/chat",
            json!({"model": "m", "messages": [{"role": "developer", "content": "x"}]}),
        ));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = json_of(call(
            "/v2/embed",
            json!({"model": "embed-v4.0", "texts": ["a"]}),
        ));
        assert_eq!(status, StatusCode::BAD_REQUEST, "input_type is required");
    }

    #[test]
    fn streams_named_events_ending_with_message_end() {
        let Reply::Stream { frames, .. } = call(
            "/v2/chat",
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b"}]}),
        ) else {
            panic!("not a stream");
        };
        let text: String = frames
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        assert!(text.starts_with("event: message-start\n"), "{text}");
        assert!(text.contains("event: content-delta\n"));
        let last = String::from_utf8_lossy(frames.last().unwrap()).into_owned();
        assert!(last.starts_with("event: message-end\n"), "{last}");
        assert!(last.contains(r#""finish_reason":"COMPLETE""#), "{last}");
    }
}
