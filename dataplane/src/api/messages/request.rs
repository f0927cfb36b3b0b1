//! A Messages request as the chat completion the pipeline runs: what routing, tags, limits and
//! every translating provider read. A provider that speaks Messages gets the original instead.
//!
//! Choices where the APIs differ:
//! - `system` (a string or text blocks) becomes the first, system message.
//! - A user turn's `tool_result` blocks become `tool` messages placed before its other blocks
//!   (OpenAI wants them right after the assistant turn that called the tools); images inside a
//!   tool result follow in a user message.
//! - `tool_choice` `any` is `required`; `disable_parallel_tool_use` is
//!   `parallel_tool_calls: false`; `stop_sequences` is `stop`; `metadata.user_id` is `user`.
//! - Anthropic's server tools (web search, code execution, ...) and blocks with no chat
//!   equivalent (documents, ...) are left out of the translation and noted: a provider that does
//!   not speak Messages refuses the request, naming the first of them.
//! - `thinking`, `top_k`, `cache_control` and `thinking` blocks of earlier turns have no chat
//!   equivalent every provider takes: they reach Anthropic deployments (which get the original)
//!   and are left out of the translation.

use serde_json::{Map, Value, json};

use crate::{
    api::translate::{Noted, function_tools},
    error::ApiError,
    request::Untranslatable,
};

/// The chat completion body for a Messages body, and what it could not carry.
pub fn to_chat(messages_request: &Value) -> Result<(Value, Option<Untranslatable>), ApiError> {
    let mut noted = Noted::default();
    let chat = translate(messages_request, &mut noted)?;
    Ok((chat, noted.0))
}

fn translate(messages_request: &Value, noted: &mut Noted) -> Result<Value, ApiError> {
    let request = messages_request
        .as_object()
        .ok_or_else(|| ApiError::invalid_request("the body must be a JSON object"))?;
    let mut chat = Map::new();
    chat.insert(
        "model".into(),
        request.get("model").cloned().unwrap_or(Value::Null),
    );
    let mut messages = Vec::new();
    if let Some(system) = request.get("system") {
        let text = text_of(system, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let turns = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::invalid_request("`messages` must be an array").with_param("messages")
        })?;
    for (index, turn) in turns.iter().enumerate() {
        translate_turn(turn, index, &mut messages, noted)?;
    }
    chat.insert("messages".into(), Value::Array(messages));
    match request.get("max_tokens").and_then(Value::as_u64) {
        Some(max) => {
            chat.insert("max_tokens".into(), json!(max));
        }
        None => {
            return Err(
                ApiError::invalid_request("`max_tokens` is required").with_param("max_tokens")
            );
        }
    }
    sampling(request, messages_request, &mut chat);
    tools(request, &mut chat, noted)?;
    Ok(Value::Object(chat))
}

/// Sampling, stop sequences, the end user and streaming.
fn sampling(request: &Map<String, Value>, whole: &Value, chat: &mut Map<String, Value>) {
    for member in ["temperature", "top_p"] {
        if let Some(value) = request.get(member).filter(|v| !v.is_null()) {
            chat.insert(member.into(), value.clone());
        }
    }
    if let Some(stop) = request.get("stop_sequences").filter(|v| !v.is_null()) {
        chat.insert("stop".into(), stop.clone());
    }
    if let Some(user) = whole.pointer("/metadata/user_id").filter(|v| v.is_string()) {
        chat.insert("user".into(), user.clone());
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), Value::Bool(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
}

/// Client tools as functions and the tool choice; server tools are noted.
fn tools(
    request: &Map<String, Value>,
    chat: &mut Map<String, Value>,
    noted: &mut Noted,
) -> Result<(), ApiError> {
    function_tools(request, chat, noted, tool, "an Anthropic deployment");
    if let Some(choice) = request.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = tool_choice(choice)?;
        chat.insert("tool_choice".into(), choice);
        if parallel == Some(false) {
            chat.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(())
}

/// A string, or the text of a list of text blocks.
fn text_of(value: &Value, param: &'static str) -> Result<String, ApiError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => Ok(blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")),
        Value::Null => Ok(String::new()),
        _ => Err(ApiError::invalid_request(format!(
            "`{param}` must be a string or an array of blocks"
        ))
        .with_param(param)),
    }
}

fn translate_turn(
    turn: &Value,
    index: usize,
    out: &mut Vec<Value>,
    noted: &mut Noted,
) -> Result<(), ApiError> {
    let param = || format!("messages[{index}]");
    let role = turn["role"].as_str().unwrap_or_default();
    let blocks: Vec<Value> = match &turn["content"] {
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        Value::Array(blocks) => blocks.clone(),
        _ => {
            return Err(ApiError::invalid_request(format!(
                "messages[{index}].content must be a string or an array of blocks"
            ))
            .with_param(param()));
        }
    };
    match role {
        "user" => user_turn(&blocks, index, out, noted),
        "assistant" => {
            out.push(assistant_turn(&blocks));
            Ok(())
        }
        other => Err(ApiError::invalid_request(format!(
            "messages[{index}].role must be user or assistant, not {other:?}"
        ))
        .with_param(param())),
    }
}

fn user_turn(
    blocks: &[Value],
    index: usize,
    out: &mut Vec<Value>,
    noted: &mut Noted,
) -> Result<(), ApiError> {
    let mut parts = Vec::new();
    let mut after_tools = Vec::new();
    for block in blocks {
        match block["type"].as_str().unwrap_or_default() {
            "tool_result" => {
                let (text, images) = tool_result_content(&block["content"], index)?;
                let text = if block["is_error"] == true {
                    format!("error: {text}")
                } else {
                    text
                };
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": block["tool_use_id"],
                    "content": text,
                }));
                after_tools.extend(images);
            }
            "text" => parts.push(json!({"type": "text", "text": block["text"]})),
            "image" => parts.push(image_part(block, index)?),
            other => noted.note(
                format!("a {other} block can be sent only to an Anthropic deployment"),
                format!("messages[{index}].content"),
            ),
        }
    }
    parts.extend(after_tools);
    if parts.is_empty() {
        return Ok(());
    }
    let content = match parts.as_slice() {
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

/// A tool result's content: its text, and its images as chat image parts.
fn tool_result_content(content: &Value, index: usize) -> Result<(String, Vec<Value>), ApiError> {
    match content {
        Value::String(text) => Ok((text.clone(), Vec::new())),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for block in blocks {
                match block["type"].as_str() {
                    Some("text") => {
                        texts.push(block["text"].as_str().unwrap_or_default().to_owned())
                    }
                    Some("image") => images.push(image_part(block, index)?),
                    _ => {}
                }
            }
            Ok((texts.join("\n"), images))
        }
        _ => Ok((String::new(), Vec::new())),
    }
}

fn image_part(block: &Value, index: usize) -> Result<Value, ApiError> {
    let source = &block["source"];
    let url = match source["type"].as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            source["media_type"].as_str().unwrap_or("image/png"),
            source["data"].as_str().unwrap_or_default()
        ),
        Some("url") => source["url"].as_str().unwrap_or_default().to_owned(),
        _ => {
            return Err(ApiError::invalid_request(format!(
                "messages[{index}]: an image source must be base64 or url"
            ))
            .with_param(format!("messages[{index}].content")));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn assistant_turn(blocks: &[Value]) -> Value {
    let text: Vec<&str> = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect();
    let calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| {
            json!({
                "id": b["id"],
                "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()},
            })
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": text.join("")});
    if text.is_empty() && !calls.is_empty() {
        message["content"] = Value::Null;
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

/// A client tool as a function; `None` for a server tool (a `type` other than `custom`).
fn tool(tool: &Value) -> Option<Value> {
    match tool["type"].as_str() {
        None | Some("custom") => Some(json!({
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description").cloned().unwrap_or(Value::Null),
                "parameters": tool.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
            },
        })),
        Some(_) => None,
    }
}

fn tool_choice(choice: &Value) -> Result<(Value, Option<bool>), ApiError> {
    let parallel = choice["disable_parallel_tool_use"].as_bool().map(|d| !d);
    let translated = match choice["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
        _ => {
            return Err(ApiError::invalid_request(
                "`tool_choice.type` must be auto, any, tool or none",
            )
            .with_param("tool_choice"));
        }
    };
    Ok((translated, parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tools_becomes_a_chat_completion() {
        let request = json!({
            "model": "claude-x",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "stream": true,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "...", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "text", "text": "And tomorrow?"},
                ]},
            ],
        });
        let (chat, untranslatable) = to_chat(&request).unwrap();
        assert_eq!(untranslatable, None);
        assert_eq!(
            chat,
            json!({
                "model": "claude-x",
                "max_tokens": 100,
                "stop": ["END"],
                "user": "u-1",
                "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "tool_choice": "required",
                "parallel_tool_calls": false,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                    {"role": "user", "content": "And tomorrow?"},
                ],
            })
        );
    }

    #[test]
    fn images_become_image_parts() {
        let request = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
            {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}},
        ]}]});
        let chat = to_chat(&request).unwrap().0;
        assert_eq!(
            chat["messages"][0]["content"],
            json!([
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
            ])
        );
    }

    #[test]
    fn what_cannot_be_translated_is_noted_and_what_is_malformed_refused() {
        let no_max = json!({"model": "m", "messages": []});
        assert_eq!(
            to_chat(&no_max).unwrap_err().param.as_deref(),
            Some("max_tokens")
        );
        let document = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Summarise"}, {"type": "document", "source": {}},
        ]}]});
        let (chat, noted) = to_chat(&document).unwrap();
        assert_eq!(chat["messages"][0]["content"], "Summarise");
        let noted = noted.unwrap();
        assert_eq!(noted.param, "messages[0].content");
        assert!(noted.message.contains("document"), "{}", noted.message);
        let search = json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert_eq!(to_chat(&search).unwrap().1.unwrap().param, "tools[0]");
        let role = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]});
        assert!(to_chat(&role).is_err());
    }
}
