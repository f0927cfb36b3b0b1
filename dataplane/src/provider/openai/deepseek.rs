//! DeepSeek's request side. DeepSeek ignores members it does not know without saying so, so the
//! body is checked against an allow-list (an ignored parameter would be a silently dropped one):
//! members pass byte for byte, `max_completion_tokens` is renamed `max_tokens`, `response_format`
//! may only be `json_object`, images are refused (DeepSeek's chat models read text only), and
//! there is no embeddings or image endpoint.
//!
//! `reasoning_content` (the thinking of `deepseek-reasoner`) comes back as an extension member of
//! the message or delta, next to `content`, and is passed through: OpenAI clients ignore it and
//! clients that know DeepSeek read it. Assistant messages in the history go upstream as the client
//! sent them, `reasoning_content` included when it sent one.

use bytes::Bytes;
use modelgate_crds::compiled::CompiledDeployment;
use serde_json::Value;

use super::{
    super::{
        CallError, Endpoint, Target,
        chat::{ADVISORY, Content, Message, ResponseFormat},
    },
    base_url,
    body::BodyWriter,
    no_endpoint,
};
use crate::request::EXTENSION_FIELD;

pub const NAME: &str = "deepseek";
const BASE_URL: &str = "https://api.deepseek.com";

/// Members DeepSeek's chat API takes as OpenAI sends them (and its own `thinking` switch).
const PASSED: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "thinking",
];

pub fn url(deployment: &CompiledDeployment, endpoint: Endpoint) -> Result<String, CallError> {
    match endpoint {
        Endpoint::ChatCompletions => Ok(format!(
            "{}{}",
            base_url(deployment.base_url.as_deref(), BASE_URL),
            endpoint.openai_path()
        )),
        Endpoint::Embeddings | Endpoint::ImageGenerations => Err(no_endpoint(NAME, endpoint)),
    }
}

pub fn body(target: &Target<'_>) -> Result<Bytes, CallError> {
    if target.endpoint != Endpoint::ChatCompletions {
        return Err(no_endpoint(NAME, target.endpoint));
    }
    let request = target.request;
    let given = |key| request.raw(key).is_some_and(|raw| raw != b"null");
    let max_completion_tokens = given("max_completion_tokens");
    let mut body = BodyWriter::with_capacity(request.body().len() + 64);
    for (key, raw) in request.members() {
        if raw == b"null" {
            continue;
        }
        match key {
            "model" | EXTENSION_FIELD | "stream_options" => {}
            "messages" => match text_only(raw).and_then(|()| developer_as_system(raw))? {
                Some(rewritten) => body.value(key, &rewritten),
                None => body.raw(key, raw),
            },
            "max_completion_tokens" => body.raw("max_tokens", raw),
            "max_tokens" if max_completion_tokens => {}
            "response_format" => {
                check_response_format(raw)?;
                body.raw(key, raw);
            }
            // DeepSeek has no switch for parallel calls: only OpenAI's default can be honoured.
            "parallel_tool_calls" if raw == b"true" => {}
            "parallel_tool_calls" => return Err(unsupported_value(key, "false")),
            "n" if raw == b"1" => {}
            "n" => return Err(unsupported_value(key, "> 1")),
            key if PASSED.contains(&key) => body.raw(key, raw),
            key if ADVISORY.contains(&key) => {}
            key => return Err(unsupported(key)),
        }
    }
    if target.stream {
        // DeepSeek reports a stream's usage only when asked, and every stream is costed.
        body.raw("stream_options", br#"{"include_usage":true}"#);
    }
    body.value("model", &target.deployment.model);
    Ok(body.finish())
}

fn unsupported(key: &str) -> CallError {
    CallError::unsupported(format!("`{key}` is not supported by provider {NAME}")).with_param(key)
}

fn unsupported_value(key: &str, value: &str) -> CallError {
    CallError::unsupported(format!(
        "`{key}` {value} is not supported by provider {NAME}"
    ))
    .with_param(key)
}

/// JSON mode is `json_object` only: a schema cannot be carried.
fn check_response_format(raw: &[u8]) -> Result<(), CallError> {
    let format: ResponseFormat = serde_json::from_slice(raw).map_err(|e| {
        CallError::invalid_request(format!("`response_format`: {e}")).with_param("response_format")
    })?;
    match format.kind.as_str() {
        "text" | "json_object" => Ok(()),
        "json_schema" => Err(CallError::unsupported(format!(
            "response_format `json_schema` is not supported by provider {NAME}; use `json_object`"
        ))
        .with_param("response_format")),
        other => Err(
            CallError::invalid_request(format!("unknown response_format type `{other}`"))
                .with_param("response_format"),
        ),
    }
}

/// Refuses every content part but text (images, audio, files), which DeepSeek's text-only
/// models have no place for. The messages are read, not searched: an escaped member name must
/// not slip through.
fn text_only(raw: &[u8]) -> Result<(), CallError> {
    let messages: Vec<Message> = serde_json::from_slice(raw).map_err(|e| {
        CallError::invalid_request(format!("`messages`: {e}")).with_param("messages")
    })?;
    let other = messages
        .iter()
        .filter_map(|m| match &m.content {
            Some(Content::Parts(parts)) => Some(parts),
            _ => None,
        })
        .flatten()
        .find(|part| part.kind != "text");
    match other {
        None => Ok(()),
        Some(part) => Err(CallError::unsupported(format!(
            "content parts of type `{}` are not supported by provider {NAME} (text only)",
            part.kind
        ))
        .with_param("messages")),
    }
}

/// The messages with OpenAI's `developer` role spelled `system` (DeepSeek knows only the older
/// name), or `None` when there is none and the raw bytes can go as they are.
fn developer_as_system(raw: &[u8]) -> Result<Option<Vec<Value>>, CallError> {
    if memchr::memmem::find(raw, b"\"developer\"").is_none() {
        return Ok(None);
    }
    let mut messages: Vec<Value> = serde_json::from_slice(raw).map_err(|e| {
        CallError::invalid_request(format!("`messages`: {e}")).with_param("messages")
    })?;
    for message in &mut messages {
        if let Some(role) = message.get_mut("role")
            && role == "developer"
        {
            *role = Value::from("system");
        }
    }
    Ok(Some(messages))
}
