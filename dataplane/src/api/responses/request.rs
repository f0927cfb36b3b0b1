//! A Responses request as the chat completion the pipeline runs. OpenAI and Azure deployments get
//! the original instead.
//!
//! Choices where the APIs differ:
//! - `instructions` becomes the first, system message; `input` as a string is one user message;
//!   as items: messages keep their role (`developer` included), consecutive `function_call`
//!   items become one assistant message with tool calls, `function_call_output` a tool message,
//!   and `reasoning` items (earlier turns' reasoning) are left out.
//! - `text.format` is `response_format`; `max_output_tokens` is `max_tokens`;
//!   `safety_identifier` (or `user`) is `user`.
//! - Function tools become chat functions. What the chat translation cannot carry (built-in
//!   tools such as web search, items other than messages and function calls, images by file id,
//!   `previous_response_id`, which needs a provider that keeps responses) is left out and noted:
//!   a provider that does not speak Responses refuses the request, naming the first of them.
//! - `reasoning`, `store`, `metadata`, `include` and `truncation` reach OpenAI and Azure (which
//!   get the original) and are left out of the translation.

use serde_json::{Map, Value, json};

use crate::{
    api::translate::{Noted, function_tools},
    error::ApiError,
    request::Untranslatable,
};

/// The chat completion body for a Responses body, and what it could not carry.
pub fn to_chat(responses_request: &Value) -> Result<(Value, Option<Untranslatable>), ApiError> {
    let mut noted = Noted::default();
    let chat = translate(responses_request, &mut noted)?;
    Ok((chat, noted.0))
}

fn translate(responses_request: &Value, noted: &mut Noted) -> Result<Value, ApiError> {
    let request = responses_request
        .as_object()
        .ok_or_else(|| ApiError::invalid_request("the body must be a JSON object"))?;
    if request
        .get("previous_response_id")
        .is_some_and(|id| !id.is_null())
    {
        noted.note(
            "previous_response_id continues a response stored by OpenAI or Azure, and can be sent only to them".to_owned(),
            "previous_response_id".to_owned(),
        );
    }
    let mut chat = Map::new();
    chat.insert(
        "model".into(),
        request.get("model").cloned().unwrap_or(Value::Null),
    );
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                translate_item(item, index, &mut messages, noted)?;
            }
        }
        _ => {
            return Err(
                ApiError::invalid_request("`input` must be a string or an array of items")
                    .with_param("input"),
            );
        }
    }
    chat.insert("messages".into(), Value::Array(messages));
    sampling(request, &mut chat);
    tools(request, &mut chat, noted);
    if let Some(response_format) = responses_request
        .pointer("/text/format")
        .and_then(response_format)
    {
        chat.insert("response_format".into(), response_format);
    }
    Ok(Value::Object(chat))
}

/// Token limit, sampling, the end user and streaming.
fn sampling(request: &Map<String, Value>, chat: &mut Map<String, Value>) {
    if let Some(max) = request.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    for member in ["temperature", "top_p", "parallel_tool_calls"] {
        if let Some(value) = request.get(member).filter(|v| !v.is_null()) {
            chat.insert(member.into(), value.clone());
        }
    }
    if let Some(user) = request
        .get("safety_identifier")
        .or_else(|| request.get("user"))
        .filter(|v| v.is_string())
    {
        chat.insert("user".into(), user.clone());
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), Value::Bool(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
}

/// Function tools and the tool choice; built-in tools are noted.
fn tools(request: &Map<String, Value>, chat: &mut Map<String, Value>, noted: &mut Noted) {
    function_tools(request, chat, noted, tool, "an OpenAI or Azure deployment");
    if let Some(choice) = request.get("tool_choice").filter(|v| !v.is_null()) {
        chat.insert("tool_choice".into(), tool_choice(choice));
    }
}

/// `text.format` as `response_format` (plain text needs none).
fn response_format(format: &Value) -> Option<Value> {
    match format["type"].as_str() {
        Some("json_schema") => {
            let mut schema = json!({"name": format["name"], "schema": format["schema"]});
            if let Some(strict) = format.get("strict").filter(|v| !v.is_null()) {
                schema["strict"] = strict.clone();
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        Some("json_object") => Some(json!({"type": "json_object"})),
        _ => None,
    }
}

fn translate_item(
    item: &Value,
    index: usize,
    out: &mut Vec<Value>,
    noted: &mut Noted,
) -> Result<(), ApiError> {
    let kind = item["type"]
        .as_str()
        .unwrap_or(if item.get("role").is_some() {
            "message"
        } else {
            ""
        });
    match kind {
        "message" => {
            let role = match item["role"].as_str() {
                Some(role @ ("user" | "assistant" | "system" | "developer")) => role,
                _ => {
                    return Err(ApiError::invalid_request(format!(
                        "input[{index}].role must be user, assistant, system or developer"
                    ))
                    .with_param(format!("input[{index}].role")));
                }
            };
            out.push(
                json!({"role": role, "content": content(&item["content"], role, index, noted)?}),
            );
        }
        "function_call" => {
            let call = json!({
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            });
            match out.last_mut() {
                Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some() => {
                    if let Some(calls) = last["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match &item["output"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.push(json!({"role": "tool", "tool_call_id": item["call_id"], "content": output}));
        }
        "reasoning" => {}
        other => noted.note(
            format!(
                "input items of type {other:?} can be sent only to an OpenAI or Azure deployment"
            ),
            format!("input[{index}]"),
        ),
    }
    Ok(())
}

/// A message's content: a string, or its parts as chat parts (assistant text joined).
fn content(
    content: &Value,
    role: &str,
    index: usize,
    noted: &mut Noted,
) -> Result<Value, ApiError> {
    let parts = match content {
        Value::String(text) => return Ok(json!(text)),
        Value::Array(parts) => parts,
        _ => {
            return Err(ApiError::invalid_request(format!(
                "input[{index}].content must be a string or an array of parts"
            ))
            .with_param(format!("input[{index}].content")));
        }
    };
    if role == "assistant" {
        let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        return Ok(json!(text.join("")));
    }
    let mut out = Vec::new();
    for part in parts {
        match part["type"].as_str() {
            Some("input_text" | "output_text" | "text") => {
                out.push(json!({"type": "text", "text": part["text"]}));
            }
            Some("input_image") => match part["image_url"].as_str() {
                Some(url) => {
                    let mut image = json!({"url": url});
                    if let Some(detail) = part["detail"].as_str() {
                        image["detail"] = json!(detail);
                    }
                    out.push(json!({"type": "image_url", "image_url": image}));
                }
                None => noted.note(
                    "an image by file_id can be sent only to an OpenAI or Azure deployment"
                        .to_owned(),
                    format!("input[{index}].content"),
                ),
            },
            Some(other) => noted.note(
                format!("{other} content can be sent only to an OpenAI or Azure deployment"),
                format!("input[{index}].content"),
            ),
            None => {}
        }
    }
    Ok(match out.as_slice() {
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(out),
    })
}

/// A function tool as a chat function; `None` for a built-in tool.
fn tool(tool: &Value) -> Option<Value> {
    if tool["type"] != "function" {
        return None;
    }
    let mut function = json!({
        "name": tool["name"],
        "parameters": tool.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
    });
    if let Some(description) = tool.get("description").filter(|v| !v.is_null()) {
        function["description"] = description.clone();
    }
    if let Some(strict) = tool.get("strict").filter(|v| !v.is_null()) {
        function["strict"] = strict.clone();
    }
    Some(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: &Value) -> Value {
    match choice {
        Value::Object(named) if named.get("type").and_then(Value::as_str) == Some("function") => {
            json!({"type": "function", "function": {"name": named["name"]}})
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_chat_messages() {
        let request = json!({
            "model": "gpt-5",
            "instructions": "Be brief.",
            "store": false,
            "reasoning": {"effort": "high"},
            "max_output_tokens": 200,
            "stream": true,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}},
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                {"type": "function_call_output", "call_id": "call_2", "output": "20C"},
            ],
        });
        let (chat, noted) = to_chat(&request).unwrap();
        assert_eq!(noted, None);
        assert_eq!(
            chat,
            json!({
                "model": "gpt-5",
                "max_tokens": 200,
                "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": true}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "20C"},
                ],
            })
        );
    }

    #[test]
    fn a_string_input_is_one_user_message_and_images_are_parts() {
        let chat = to_chat(&json!({"model": "m", "input": "Hi"})).unwrap().0;
        assert_eq!(chat["messages"], json!([{"role": "user", "content": "Hi"}]));
        let chat = to_chat(
            &json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "Describe"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "low"},
            ]}]}),
        )
        .unwrap()
        .0;
        assert_eq!(
            chat["messages"][0]["content"],
            json!([
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"}},
            ])
        );
        assert!(to_chat(&json!({"model": "m"})).is_err());
    }

    #[test]
    fn what_only_openai_can_carry_is_noted() {
        for (request, param) in [
            (
                json!({"model": "m", "input": "Hi", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": "Hi", "tools": [{"type": "web_search"}]}),
                "tools[0]",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
                "input[0]",
            ),
        ] {
            let (_, noted) = to_chat(&request).unwrap();
            assert_eq!(noted.unwrap().param, param);
        }
    }
}
