//! DeepSeek's API, served under `/deepseek/...` (`/deepseek/chat/completions` and
//! `/deepseek/v1/chat/completions`; tests set a deployment's `baseUrl` to `http://<fake>/deepseek`).
//! Like DeepSeek: usage reports `prompt_cache_hit_tokens`/`prompt_cache_miss_tokens` (half the
//! prompt is a cache hit here), `deepseek-reasoner` answers with `reasoning_content` before its
//! content, streams carry `: keep-alive` comments and report usage only for `include_usage`,
//! `json_schema` and image parts are refused, and there is no embeddings endpoint.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Dialect, Reply, Req, sse_data};
use crate::reply::{self, Answer};

pub static DIALECT: Dialect = Dialect {
    name: "deepseek",
    matches: |path| path.starts_with("/deepseek/"),
    reply: answer,
    error: |status| {
        let (message, kind) = match status {
            400 => ("Invalid request", "invalid_request_error"),
            401 => (
                "Authentication Fails (no such user)",
                "authentication_error",
            ),
            402 => ("Insufficient Balance", "unknown_error"),
            422 => ("Invalid parameters", "invalid_request_error"),
            429 => ("Rate Limit Reached", "rate_limit_error"),
            503 => ("Server overloaded, please try again later.", "server_error"),
            _ => ("Internal Server Error", "server_error"),
        };
        error(status, message, kind)
    },
};

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const REASONING: &str = "Let me think about what was asked.";

fn answer(req: &Req<'_>) -> Reply {
    if req.bearer().is_none() {
        return error(
            401,
            "Authentication Fails (no such user)",
            "authentication_error",
        );
    }
    let Some(body) = req.json() else {
        return error(
            400,
            "Failed to parse the request body as JSON",
            "invalid_request_error",
        );
    };
    let path = req.path.strip_prefix("/deepseek").unwrap_or(req.path);
    match path.strip_prefix("/v1").unwrap_or(path) {
        "/chat/completions" => chat(body),
        "/models" => Reply::json(StatusCode::OK, reply::models()),
        _ => error(404, "Not Found", "invalid_request_error"),
    }
}

fn chat(body: &Value) -> Reply {
    if let Err(problem) = check(body) {
        return error(
            422,
            &format!("Failed to deserialize the JSON body into the target type: {problem}"),
            "invalid_request_error",
        );
    }
    if body
        .pointer("/response_format/type")
        .and_then(Value::as_str)
        == Some("json_schema")
    {
        return error(
            400,
            "This response_format type is unavailable now",
            "invalid_request_error",
        );
    }
    let reasoner = body
        .get("model")
        .and_then(Value::as_str)
        .is_some_and(|m| m.contains("reasoner"));
    let prompt = reply::prompt_tokens(body);
    let answer = reply::answer(body);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(body, prompt, reasoner, answer);
    }
    let reasoning = reasoner.then_some(REASONING);
    let (mut message, finish, completion) = match answer {
        Answer::Text(text) => {
            let words = text.split(' ').count() as u64;
            (json!({"role": "assistant", "content": text}), "stop", words)
        }
        Answer::Tool(name) => (
            json!({"role": "assistant", "content": "", "tool_calls": [{"index": 0, "id": "call_0_fake",
                   "type": "function", "function": {"name": name, "arguments": "{}"}}]}),
            "tool_calls",
            1,
        ),
    };
    if let Some(reasoning) = reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    Reply::json(
        StatusCode::OK,
        json!({"id": "fake-deepseek", "object": "chat.completion", "created": 1_700_000_000,
               "model": model(body), "system_fingerprint": "fp_fake",
               "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
               "usage": usage(prompt, completion, reasoner)}),
    )
}

/// What DeepSeek's typed request refuses: roles it does not know and content parts other than
/// text.
fn check(body: &Value) -> Result<(), String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("missing field `messages`")?;
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        if !["system", "user", "assistant", "tool"].contains(&role) {
            return Err(format!(
                "messages[{i}].role: unknown variant `{role}`, expected one of `system`, `user`, `assistant`, `tool`"
            ));
        }
        if let Some(Value::Array(parts)) = message.get("content")
            && let Some(kind) = parts
                .iter()
                .filter_map(|p| p.get("type").and_then(Value::as_str))
                .find(|kind| *kind != "text")
        {
            return Err(format!(
                "messages[{i}].content: unknown variant `{kind}`, expected `text`"
            ));
        }
    }
    Ok(())
}

fn stream(body: &Value, prompt: u64, reasoner: bool, answer: Answer) -> Reply {
    let model = model(body);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "fake-deepseek", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": model, "system_fingerprint": "fp_fake",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut frames = vec![Bytes::from_static(KEEP_ALIVE)];
    let mut opening = json!({"role": "assistant", "content": ""});
    if reasoner {
        opening = json!({"role": "assistant", "content": null, "reasoning_content": ""});
    }
    frames.push(sse_data(&chunk(opening, Value::Null)));
    if reasoner {
        frames.push(sse_data(&chunk(
            json!({"content": null, "reasoning_content": REASONING}),
            Value::Null,
        )));
    }
    frames.push(Bytes::from_static(KEEP_ALIVE));
    let (finish, completion) = match answer {
        Answer::Text(text) => {
            let pieces = reply::pieces(&text);
            let count = pieces.len() as u64;
            for piece in pieces {
                frames.push(sse_data(&chunk(json!({"content": piece}), Value::Null)));
            }
            ("stop", count)
        }
        Answer::Tool(name) => {
            frames.push(sse_data(&chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_0_fake", "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            )));
            for fragment in ["{", "}"] {
                frames.push(sse_data(&chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                    Value::Null,
                )));
            }
            ("tool_calls", 1)
        }
    };
    frames.push(sse_data(&chunk(json!({"content": ""}), json!(finish))));
    if body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
    {
        frames.push(sse_data(&json!({"id": "fake-deepseek", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": model, "system_fingerprint": "fp_fake", "choices": [],
            "usage": usage(prompt, completion, reasoner)})));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::Stream {
        content_type: "text/event-stream",
        frames,
        error: sse_data(
            &json!({"error": {"message": "fake-provider scripted failure",
                                          "type": "server_error", "param": null, "code": null}}),
        ),
    }
}

fn model(body: &Value) -> Value {
    body.get("model").cloned().unwrap_or(json!("deepseek-chat"))
}

/// DeepSeek's usage: cache hits and misses (no `prompt_tokens_details`), and reasoning tokens
/// for the reasoner.
fn usage(prompt: u64, completion: u64, reasoner: bool) -> Value {
    let hit = prompt / 2;
    let reasoning = if reasoner {
        REASONING.split(' ').count() as u64
    } else {
        0
    };
    let completion = completion + reasoning;
    let mut usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion,
                           "prompt_cache_hit_tokens": hit, "prompt_cache_miss_tokens": prompt - hit});
    if reasoner {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": reasoning});
    }
    usage
}

fn error(status: u16, message: &str, kind: &str) -> Reply {
    Reply::json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"error": {"message": message, "type": kind, "param": null, "code": "invalid_request_error"}}),
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
            &[("authorization", "Bearer sk-ds")],
            &body,
        )
    }

    #[test]
    fn answers_with_cache_hits_and_reasoning_like_deepseek() {
        let Reply::Json { status, body, .. } = call(
            "/deepseek/chat/completions",
            json!({"model": "deepseek-reasoner", "messages": [{"role": "user", "content": "hi"}]}),
        ) else {
            panic!("a stream");
        };
        assert_eq!(status, StatusCode::OK);
        let usage = &body["usage"];
        assert_eq!(
            usage["prompt_cache_hit_tokens"].as_u64().unwrap()
                + usage["prompt_cache_miss_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap()
        );
        assert!(usage.get("prompt_tokens_details").is_none());
        assert_eq!(
            body["choices"][0]["message"]["reasoning_content"],
            REASONING
        );
        let Reply::Json { status, .. } = call(
            "/deepseek/v1/chat/completions",
            json!({"model": "deepseek-chat", "messages": [{"role": "developer", "content": "x"}]}),
        ) else {
            panic!("a stream");
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn streams_keep_alives_and_usage_only_when_asked() {
        let events = |include_usage: bool| {
            let Reply::Stream { frames, .. } = call(
                "/deepseek/chat/completions",
                json!({"model": "deepseek-chat", "stream": true,
                       "stream_options": {"include_usage": include_usage},
                       "messages": [{"role": "user", "content": "hi"}]}),
            ) else {
                panic!("not a stream");
            };
            frames
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
        };
        let with = events(true);
        assert_eq!(with[0], ": keep-alive\n\n");
        assert!(with[with.len() - 2].contains(r#""choices":[]"#));
        assert!(!events(false).iter().any(|e| e.contains("usage")));
    }
}
