//! Azure OpenAI: classic deployment paths (`/openai/deployments/{deployment}/...?api-version=`,
//! the version required) and the v1 API (`/openai/v1/...`); tests set a deployment's `baseUrl` to
//! `http://<fake>`. Like Azure it wants an `api-key` header (or a Bearer token), answers with the
//! model's version rather than the deployment name, adds `prompt_filter_results` and per-choice
//! `content_filter_results`, and opens every stream with an empty prompt-filter chunk.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Dialect, Reply, Req, sse_data};
use crate::reply;

pub static DIALECT: Dialect = Dialect {
    name: "azure",
    matches: |path| path.starts_with("/openai/"),
    reply: answer,
    error: |status| {
        let message = match status {
            401 => "Access denied due to invalid subscription key or wrong API endpoint.".to_owned(),
            429 => "Requests to the ChatCompletions_Create Operation have exceeded token rate limit of your current pricing tier. Please retry after 1 second.".to_owned(),
            _ => format!("fake-provider scripted status {status}"),
        };
        error(status, &message)
    },
};

/// The model version Azure reports instead of the deployment name.
const MODEL_VERSION: &str = "gpt-4o-2024-08-06";

fn answer(req: &Req<'_>) -> Reply {
    if req.header("api-key").is_none() && req.bearer().is_none() {
        return error(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint.",
        );
    }
    let Some(operation) = operation(req) else {
        return error(404, "Resource not found");
    };
    let Some(body) = req.json() else {
        return error(400, "The request body is not valid JSON.");
    };
    match operation {
        "/chat/completions" if req.stream_flag() => stream(body),
        "/chat/completions" => chat(body),
        "/embeddings" => {
            let mut answer = reply::embeddings(body);
            answer["model"] = json!("text-embedding-3-small");
            Reply::json(StatusCode::OK, answer)
        }
        "/images/generations" => Reply::json(StatusCode::OK, reply::images(body)),
        _ => error(404, "Resource not found"),
    }
}

/// The operation a path names (`/chat/completions`, ...), when the path is a valid one: a classic
/// path needs its `api-version`.
fn operation<'a>(req: &Req<'a>) -> Option<&'a str> {
    if let Some(operation) = req.path.strip_prefix("/openai/v1") {
        return Some(operation);
    }
    let deployment_path = req.path.strip_prefix("/openai/deployments/")?;
    let (_deployment, operation) = deployment_path.split_at(deployment_path.find('/')?);
    let versioned = req.query.split('&').any(|pair| {
        pair.strip_prefix("api-version=")
            .is_some_and(|v| !v.is_empty())
    });
    versioned.then_some(operation)
}

fn chat(body: &Value) -> Reply {
    let mut answer = reply::chat_completion(body);
    answer["model"] = json!(MODEL_VERSION);
    answer["prompt_filter_results"] = prompt_filter_results();
    if let Some(Value::Array(choices)) = answer.get_mut("choices") {
        for choice in choices {
            choice["content_filter_results"] = safe(true);
        }
    }
    Reply::json(StatusCode::OK, answer)
}

fn stream(body: &Value) -> Reply {
    let mut frames = vec![sse_data(
        &json!({"choices": [], "created": 0, "id": "", "model": "",
        "object": "", "prompt_filter_results": prompt_filter_results()}),
    )];
    for (i, mut chunk) in reply::chat_chunks(body).into_iter().enumerate() {
        chunk["model"] = json!(MODEL_VERSION);
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            for choice in choices {
                // The first content chunk carries an empty verdict, as at Azure.
                choice["content_filter_results"] = if i == 0 { json!({}) } else { safe(true) };
            }
        }
        frames.push(sse_data(&chunk));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::Stream {
        content_type: "text/event-stream",
        frames,
        error: sse_data(
            &json!({"error": {"message": "The server had an error processing your request.",
                                          "type": "server_error", "param": null, "code": "500"}}),
        ),
    }
}

fn prompt_filter_results() -> Value {
    let mut results = safe(false);
    results["jailbreak"] = json!({"filtered": false, "detected": false});
    json!([{"prompt_index": 0, "content_filter_results": results}])
}

/// Every category judged safe (and, for completions, no protected material found).
fn safe(completion: bool) -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    let mut results = json!({"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe});
    if completion {
        let none = json!({"filtered": false, "detected": false});
        results["protected_material_code"] = none.clone();
        results["protected_material_text"] = none;
    }
    results
}

fn error(status: u16, message: &str) -> Reply {
    let body = json!({"error": {"code": status.to_string(), "message": message}});
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = if status == StatusCode::TOO_MANY_REQUESTS {
        vec![
            ("retry-after", "1".to_owned()),
            ("retry-after-ms", "1000".to_owned()),
        ]
    } else {
        Vec::new()
    };
    Reply::Json {
        status,
        body,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str, query: &str, key: bool, body: Value) -> Reply {
        let headers: &[(&'static str, &str)] = if key {
            &[("api-key", "0123456789abcdef")]
        } else {
            &[]
        };
        super::super::answer_to(answer, path, query, headers, &body)
    }

    fn status(reply: &Reply) -> StatusCode {
        match reply {
            Reply::Json { status, .. } => *status,
            Reply::Stream { .. } => StatusCode::OK,
        }
    }

    #[test]
    fn serves_classic_and_v1_paths_with_a_key() {
        let chat = json!({"messages": [{"role": "user", "content": "hi"}]});
        let classic = "/openai/deployments/gpt-4o-prod/chat/completions";
        let ok = call(classic, "api-version=2024-10-21", true, chat.clone());
        let Reply::Json { body, .. } = &ok else {
            panic!("a stream");
        };
        assert_eq!(body["model"], MODEL_VERSION);
        assert!(body["prompt_filter_results"].is_array());
        assert!(body["choices"][0]["content_filter_results"]["hate"].is_object());
        assert_eq!(
            status(&call(classic, "", true, chat.clone())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(&call(
                classic,
                "api-version=2024-10-21",
                false,
                chat.clone()
            )),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&call("/openai/v1/chat/completions", "", true, chat)),
            StatusCode::OK
        );
    }

    #[test]
    fn streams_open_with_the_empty_prompt_filter_chunk() {
        let Reply::Stream { frames, .. } = call(
            "/openai/v1/chat/completions",
            "",
            true,
            json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ) else {
            panic!("not a stream");
        };
        let first = String::from_utf8_lossy(&frames[0]).into_owned();
        assert!(
            first.contains(r#""choices":[]"#) && first.contains(r#""id":"""#),
            "{first}"
        );
        assert!(first.contains("prompt_filter_results"));
        assert!(String::from_utf8_lossy(&frames[1]).contains(r#""content_filter_results":{}"#));
    }
}
