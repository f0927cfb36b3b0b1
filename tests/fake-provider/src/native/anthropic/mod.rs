//! Anthropic's Messages API (`POST /v1/messages`), and Claude on Vertex AI
//! (`/v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict` and
//! `:streamRawPredict`), which takes the same body with the model in the URL, the version in
//! the body and a bearer token instead of `x-api-key`. The request is checked the way the real
//! API checks what matters to a translator, read back into OpenAI's shape for `reply::answer`,
//! and answered in Anthropic's format, streamed with the whole event sequence. JSON mode asked
//! for with a forced `json_response` tool (how gateways get JSON from every Claude model) is
//! answered with the fake's JSON answer as that call's input.

mod read;
mod write;

use http::StatusCode;
use serde_json::{Value, json};

use super::{Dialect, Reply, Req};
use crate::reply;

pub static DIALECT: Dialect = Dialect {
    name: "anthropic",
    matches: |path| path == "/v1/messages" || vertex_model(path).is_some(),
    reply: answer,
    error: write::error,
};

/// What `anthropic_version` Vertex AI wants in the body.
const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// The model of a Vertex AI Claude path.
fn vertex_model(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/projects/")?;
    let (location, model) = rest.split_once("/publishers/anthropic/models/")?;
    if !location.contains("/locations/") {
        return None;
    }
    model
        .strip_suffix(":rawPredict")
        .or_else(|| model.strip_suffix(":streamRawPredict"))
}

fn answer(req: &Req<'_>) -> Reply {
    let vertex = vertex_model(req.path);
    if let Err(refusal) = authorized(req, vertex.is_some()).and_then(|()| read::check(req.body)) {
        return refusal;
    }
    let model = match vertex {
        Some(model) => model,
        None => req
            .body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("claude-fake"),
    };
    let openai = read::to_openai(req.body, model);
    let mut completion = reply::chat_completion(&openai);
    if read::forces_json_tool(req.body)
        && let Some(arguments) =
            completion.pointer_mut("/choices/0/message/tool_calls/0/function/arguments")
    {
        *arguments = json!(reply::JSON_ANSWER);
    }
    let message = write::message(&completion, model);
    if req.stream_flag() {
        write::stream(&message)
    } else {
        Reply::Json {
            status: StatusCode::OK,
            body: message,
            headers: write::headers(),
        }
    }
}

/// Anthropic wants `x-api-key` and `anthropic-version` headers; Vertex AI a bearer token, the
/// version in the body and no `model` member.
fn authorized(req: &Req<'_>, vertex: bool) -> Result<(), Reply> {
    if vertex {
        let bearer = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| !token.trim().is_empty());
        if !bearer {
            return Err(Reply::json(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                       "message": "Request had invalid authentication credentials."}}),
            ));
        }
        if req.body.get("anthropic_version").and_then(Value::as_str) != Some(VERTEX_VERSION) {
            return Err(write::invalid(format!(
                "anthropic_version: Input should be '{VERTEX_VERSION}'"
            )));
        }
        if req.body.get("model").is_some() {
            return Err(write::invalid("model: Extra inputs are not permitted"));
        }
        return Ok(());
    }
    if req
        .header("x-api-key")
        .is_none_or(|key| key.trim().is_empty())
    {
        return Err(write::refusal(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if req.header("anthropic-version").is_none() {
        return Err(write::invalid("anthropic-version: header is required"));
    }
    if req.body.get("model").and_then(Value::as_str).is_none() {
        return Err(write::invalid("model: Field required"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn call(path: &str, headers: &[(&'static str, &str)], body: Value) -> Reply {
        super::super::answer_to(answer, path, "", headers, &body)
    }

    const KEYS: &[(&str, &str)] = &[
        ("x-api-key", "sk-ant-test"),
        ("anthropic-version", "2023-06-01"),
    ];

    fn json_of(reply: Reply) -> (u16, Value) {
        match reply {
            Reply::Json { status, body, .. } => (status.as_u16(), body),
            Reply::Stream { .. } => panic!("a stream where JSON was expected"),
        }
    }

    fn events(reply: Reply) -> Vec<(String, Value)> {
        let Reply::Stream { frames, .. } = reply else {
            panic!("JSON where a stream was expected");
        };
        frames
            .iter()
            .map(|frame: &Bytes| {
                let text = std::str::from_utf8(frame).unwrap();
                let (name, data) = text.split_once("\ndata: ").unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_owned();
                (name, serde_json::from_str(data.trim()).unwrap())
            })
            .collect()
    }

    fn hello() -> Value {
        json!({"model": "claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn answers_text_with_anthropic_usage() {
        let (status, body) = json_of(call("/v1/messages", KEYS, hello()));
        assert_eq!(status, 200);
        assert_eq!(body["type"], "message");
        assert_eq!(
            body["content"][0]["text"],
            format!("{}hi", reply::CHAT_PREFIX)
        );
        assert_eq!(body["stop_reason"], "end_turn");
        assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    }

    #[test]
    fn refuses_what_the_real_api_refuses() {
        let (status, body) = json_of(call("/v1/messages", &KEYS[1..], hello()));
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (401, Some("authentication_error"))
        );
        let (status, _) = json_of(call("/v1/messages", &KEYS[..1], hello()));
        assert_eq!(status, 400);
        let mut no_cap = hello();
        no_cap.as_object_mut().unwrap().remove("max_tokens");
        let (status, body) = json_of(call("/v1/messages", KEYS, no_cap));
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_tokens")
        );
    }

    #[test]
    fn a_tool_call_streams_every_event_and_its_arguments_in_fragments() {
        let mut request = hello();
        request["stream"] = json!(true);
        request["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
        let events = events(call("/v1/messages", KEYS, request));
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let arguments: String = events
            .iter()
            .filter_map(|(_, e)| e.pointer("/delta/partial_json").and_then(Value::as_str))
            .collect();
        assert_eq!(arguments, "{}");
        assert_eq!(events[7].1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn tool_results_come_back_as_openai_tool_messages() {
        let request = json!({"model": "claude-x", "max_tokens": 50,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
        ]});
        let (status, body) = json_of(call("/v1/messages", KEYS, request));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["content"][0]["text"], "tool result received: sunny");
    }

    #[test]
    fn a_forced_json_response_tool_gets_the_json_answer_as_its_input() {
        let mut request = hello();
        request["tools"] = json!([{"name": "json_response", "input_schema": {"type": "object"}}]);
        request["tool_choice"] = json!({"type": "tool", "name": "json_response"});
        let (status, body) = json_of(call("/v1/messages", KEYS, request));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["content"][0]["name"], "json_response");
        assert_eq!(body["content"][0]["input"], json!({"answer": "fake"}));
    }

    #[test]
    fn vertex_takes_a_bearer_token_and_the_version_in_the_body() {
        let path = "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-x:streamRawPredict";
        let body = json!({"anthropic_version": VERTEX_VERSION, "max_tokens": 10, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]});
        let events = events(call(
            path,
            &[("authorization", "Bearer ya29.token")],
            body.clone(),
        ));
        assert_eq!(events[0].1["message"]["model"], "claude-x");
        assert_eq!(events.last().unwrap().0, "message_stop");
        let (status, _) = json_of(call(path, KEYS, body.clone()));
        assert_eq!(status, 401, "x-api-key is no Vertex credential");
        let mut with_model = body;
        with_model["model"] = json!("claude-x");
        let (status, _) = json_of(call(path, &[("authorization", "Bearer t")], with_model));
        assert_eq!(status, 400);
        assert!(!(DIALECT.matches)(
            "/v1/projects/p/locations/l/publishers/google/models/g:rawPredict"
        ));
    }
}
