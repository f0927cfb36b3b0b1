//! A Messages request: checked the way the real API checks it, then read into the OpenAI shape
//! `reply::answer` decides on.

use serde_json::{Map, Value, json};

use super::{Reply, write::invalid};

/// The body's required members, roles, non-empty text, and tool results that answer a call of
/// the turn right before (the errors a translator most easily causes).
pub fn check(body: &Value) -> Result<(), Reply> {
    if body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .is_none_or(|n| n < 1)
    {
        return Err(invalid("max_tokens: Field required"));
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64)
        && !(0.0..=1.0).contains(&t)
    {
        return Err(invalid("temperature: range: 0..1"));
    }
    let turns = match body.get("messages").and_then(Value::as_array) {
        Some(turns) if !turns.is_empty() => turns,
        _ => return Err(invalid("messages: at least one message is required")),
    };
    let mut previous_calls: Vec<String> = Vec::new();
    for (n, turn) in turns.iter().enumerate() {
        let role = turn.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(invalid(format!(
                "messages.{n}.role: Input should be 'user' or 'assistant'"
            )));
        }
        let blocks = blocks(turn);
        for block in &blocks {
            let kind = block.get("type").and_then(Value::as_str);
            if kind == Some("text") && block.get("text").and_then(Value::as_str) == Some("") {
                return Err(invalid("messages: text content blocks must be non-empty"));
            }
            if kind == Some("tool_result") {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !previous_calls.iter().any(|call| call == id) {
                    return Err(invalid(format!(
                        "messages.{n}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}"
                    )));
                }
            }
        }
        previous_calls = blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
            .filter_map(|b| b.get("id").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        if let Some(bad) = previous_calls.iter().find(|id| !valid_id(id)) {
            return Err(invalid(format!(
                "messages.{n}.content.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$' ({bad})"
            )));
        }
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A turn's content as blocks (a string is one text block).
fn blocks(turn: &Value) -> Vec<Value> {
    match turn.get("content") {
        Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
        Some(Value::Array(blocks)) => blocks.clone(),
        _ => Vec::new(),
    }
}

/// Text of blocks or a string, joined.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The request in the OpenAI shape: the system prompt as a system message, tool results as
/// `tool` messages ahead of the user text that shares their turn, tools (left out for
/// `tool_choice: none`, the named one first) and structured output as `response_format`.
pub fn to_openai(body: &Value, model: &str) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        messages.push(json!({"role": "system", "content": text_of(Some(system))}));
    }
    for turn in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = turn.get("role").and_then(Value::as_str).unwrap_or("user");
        let mut texts = Vec::new();
        let mut calls = Vec::new();
        for block in blocks(turn) {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => texts.push(text_of(Some(&block["text"]))),
                Some("tool_use") => calls.push(json!({
                    "id": block["id"], "type": "function",
                    "function": {"name": block["name"], "arguments": block["input"].to_string()},
                })),
                Some("tool_result") => messages.push(json!({
                    "role": "tool", "tool_call_id": block["tool_use_id"],
                    "content": text_of(block.get("content")),
                })),
                _ => {}
            }
        }
        if role == "assistant" {
            let mut message = json!({"role": "assistant", "content": texts.join("")});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            }
            messages.push(message);
        } else if !texts.is_empty() {
            messages.push(json!({"role": "user", "content": texts.join(" ")}));
        }
    }
    let mut openai = Map::new();
    openai.insert("model".to_owned(), json!(model));
    openai.insert("messages".to_owned(), Value::Array(messages));
    let tools = tools(body);
    if !tools.is_empty() {
        openai.insert("tools".to_owned(), Value::Array(tools));
    }
    if body
        .pointer("/output_config/format/type")
        .and_then(Value::as_str)
        == Some("json_schema")
    {
        openai.insert("response_format".to_owned(), json!({"type": "json_schema"}));
    }
    Value::Object(openai)
}

/// Whether the request forces the `json_response` tool: JSON mode, the forced-tool way.
pub fn forces_json_tool(body: &Value) -> bool {
    body.pointer("/tool_choice/type").and_then(Value::as_str) == Some("tool")
        && body.pointer("/tool_choice/name").and_then(Value::as_str) == Some("json_response")
}

fn tools(body: &Value) -> Vec<Value> {
    let choice = body.pointer("/tool_choice/type").and_then(Value::as_str);
    if choice == Some("none") {
        return Vec::new();
    }
    let named = body.pointer("/tool_choice/name").and_then(Value::as_str);
    let mut tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| json!({"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}))
        .collect();
    if let Some(at) = tools
        .iter()
        .position(|t| t.pointer("/function/name").and_then(Value::as_str) == named)
    {
        tools[..=at].rotate_right(1);
    }
    tools
}
