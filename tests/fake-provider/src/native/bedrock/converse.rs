//! Converse requests, read: checked the way Bedrock checks what matters to a gateway (roles
//! that alternate and start with the user, no blank text, tool blocks only with a `toolConfig`,
//! a 0–1 temperature, a schema sent as a string), then seen as the OpenAI request that
//! `reply::answer` understands.

use serde_json::{Map, Value, json};

/// The OpenAI view of a valid Converse body, or the ValidationException message.
pub fn read(body: &Value) -> Result<Value, String> {
    let mut messages = system(body)?;
    let turns = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("The messages field is required and must not be empty.")?;
    let mut previous: Option<&str> = None;
    let mut has_tool_blocks = false;
    for (i, turn) in turns.iter().enumerate() {
        let role = turn.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "user" | "assistant") {
            return Err(format!("messages.{i}.role: must be user or assistant"));
        }
        if i == 0 && role != "user" {
            return Err(
                "A conversation must start with a user message. Try again with a \
                        conversation that starts with a user message."
                    .to_owned(),
            );
        }
        if previous == Some(role) {
            return Err(
                "A conversation must alternate between user and assistant roles. Make \
                        sure the conversation alternates between user and assistant roles and \
                        try again."
                    .to_owned(),
            );
        }
        previous = Some(role);
        let read = Turn::read(turn, i, role)?;
        has_tool_blocks |= !read.calls.is_empty() || !read.results.is_empty();
        read.push_openai(role, &mut messages);
    }
    if has_tool_blocks && body.get("toolConfig").is_none() {
        return Err(
            "The toolConfig field must be defined when using toolUse and toolResult \
                    content blocks."
                .to_owned(),
        );
    }
    check_inference_config(body.get("inferenceConfig"))?;
    let mut openai = json!({ "messages": messages });
    if let Some(config) = body.get("toolConfig") {
        openai["tools"] = Value::Array(tools(config)?);
    }
    if let Some(config) = body.get("outputConfig") {
        check_output_config(config)?;
        openai["response_format"] = json!({"type": "json_schema"});
    }
    Ok(openai)
}

fn system(body: &Value) -> Result<Vec<Value>, String> {
    let Some(blocks) = body.get("system") else {
        return Ok(Vec::new());
    };
    let blocks = blocks.as_array().ok_or("system: must be a list")?;
    let mut messages = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if let Some(text) = block.get("text") {
            let text = non_blank(text).ok_or(format!("system.{i}.text: must not be blank"))?;
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    Ok(messages)
}

/// One turn's content blocks, sorted by kind.
#[derive(Default)]
struct Turn {
    texts: Vec<String>,
    has_media: bool,
    calls: Vec<Value>,
    results: Vec<Value>,
}

impl Turn {
    fn read(turn: &Value, i: usize, role: &str) -> Result<Self, String> {
        let blocks = turn
            .get("content")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
            .ok_or(format!(
                "The content field in the Message object at messages.{i} is empty. Add a \
                 ContentBlock object to the content field and try again."
            ))?;
        let mut read = Self::default();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            let (kind, value) = single_member(block)
                .ok_or(format!("{at}: a ContentBlock must have exactly one member"))?;
            match (kind, role) {
                ("text", _) => read.texts.push(non_blank(value).ok_or(format!(
                    "The text field in the ContentBlock object at {at} is blank. Add text to \
                     the text field, and try again."
                ))?),
                ("image", "user") => {
                    check_image(value).map_err(|why| format!("{at}.image: {why}"))?;
                    read.has_media = true;
                }
                ("toolUse", "assistant") => read.calls.push(tool_use(value, &at)?),
                ("toolResult", "user") => read.results.push(tool_result(value, &at)?),
                ("image" | "toolUse" | "toolResult", _) => {
                    return Err(format!(
                        "{at}: a {kind} block is not allowed in a {role} message"
                    ));
                }
                // Documents, reasoning and cache points: accepted, not read.
                _ => read.has_media = true,
            }
        }
        Ok(read)
    }

    fn push_openai(self, role: &str, messages: &mut Vec<Value>) {
        let text = self.texts.join(" ");
        if role == "assistant" {
            let mut message = json!({"role": "assistant", "content": text});
            if !self.calls.is_empty() {
                message["tool_calls"] = Value::Array(self.calls);
            }
            messages.push(message);
            return;
        }
        messages.extend(self.results);
        if !self.texts.is_empty() || self.has_media {
            messages.push(json!({"role": "user", "content": text}));
        }
    }
}

/// The one member of a union object.
fn single_member(block: &Value) -> Option<(&str, &Value)> {
    let object = block.as_object()?;
    let mut members = object.iter();
    let (key, value) = members.next()?;
    members.next().is_none().then_some((key.as_str(), value))
}

fn non_blank(value: &Value) -> Option<String> {
    value
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

fn check_image(image: &Value) -> Result<(), String> {
    use base64::Engine as _;
    let format = image
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !matches!(format, "png" | "jpeg" | "gif" | "webp") {
        return Err(format!("unsupported format `{format}`"));
    }
    let bytes = image
        .pointer("/source/bytes")
        .and_then(Value::as_str)
        .ok_or("source.bytes is required")?;
    base64::engine::general_purpose::STANDARD
        .decode(bytes)
        .map(|_| ())
        .map_err(|_| "source.bytes is not base64".to_owned())
}

fn tool_use(block: &Value, at: &str) -> Result<Value, String> {
    let id = tool_use_id(block, at)?;
    let name = block
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let input = block
        .get("input")
        .filter(|i| i.is_object())
        .ok_or(format!("{at}.toolUse.input: must be a JSON object"))?;
    Ok(json!({"id": id, "type": "function",
              "function": {"name": name, "arguments": input.to_string()}}))
}

fn tool_result(block: &Value, at: &str) -> Result<Value, String> {
    let id = tool_use_id(block, at)?;
    let content = block
        .get("content")
        .and_then(Value::as_array)
        .ok_or(format!("{at}.toolResult.content: is required"))?;
    let text: Vec<String> = content
        .iter()
        .filter_map(|c| match (c.get("text"), c.get("json")) {
            (Some(Value::String(text)), _) => Some(text.clone()),
            (_, Some(json)) => Some(json.to_string()),
            _ => None,
        })
        .collect();
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text.join(" ")}))
}

/// `toolUseId`: 1–64 characters of `[a-zA-Z0-9_.:-]`.
fn tool_use_id<'a>(block: &'a Value, at: &str) -> Result<&'a str, String> {
    block
        .get("toolUseId")
        .and_then(Value::as_str)
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        })
        .ok_or(format!(
            "{at}: toolUseId must be 1-64 characters of [a-zA-Z0-9_.:-]"
        ))
}

fn check_inference_config(config: Option<&Value>) -> Result<(), String> {
    let Some(config) = config else {
        return Ok(());
    };
    let number = |key: &str| config.get(key).and_then(Value::as_f64);
    if let Some(t) = number("temperature").filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(format!("inferenceConfig.temperature: {t} is not in 0-1"));
    }
    if let Some(p) = number("topP").filter(|p| !(0.0..=1.0).contains(p)) {
        return Err(format!("inferenceConfig.topP: {p} is not in 0-1"));
    }
    if number("maxTokens").is_some_and(|m| m < 1.0) {
        return Err("inferenceConfig.maxTokens: must be at least 1".to_owned());
    }
    if let Some(stops) = config.get("stopSequences") {
        let ok = stops
            .as_array()
            .is_some_and(|s| s.iter().all(|s| non_blank(s).is_some()));
        if !ok {
            return Err("inferenceConfig.stopSequences: must be non-empty strings".to_owned());
        }
    }
    Ok(())
}

/// The OpenAI tools of a `toolConfig` (a named choice first, so the fake calls it).
fn tools(config: &Value) -> Result<Vec<Value>, String> {
    let specs = config
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
        .ok_or("toolConfig.tools: at least one tool is required")?;
    let mut tools = Vec::new();
    for (i, tool) in specs.iter().enumerate() {
        let Some(spec) = tool.get("toolSpec") else {
            continue;
        };
        let name = spec.get("name").and_then(Value::as_str).unwrap_or_default();
        let valid_name = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !valid_name
            || !spec
                .pointer("/inputSchema/json")
                .is_some_and(Value::is_object)
        {
            return Err(format!(
                "toolConfig.tools.{i}.toolSpec: needs a valid name and inputSchema.json"
            ));
        }
        tools.push(json!({"type": "function", "function": {"name": name}}));
    }
    if let Some(choice) = config.get("toolChoice") {
        match single_member(choice) {
            Some(("auto" | "any", _)) => {}
            Some(("tool", named)) => {
                let name = named
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let position = tools
                    .iter()
                    .position(|t| t.pointer("/function/name") == Some(&json!(name)))
                    .ok_or(format!(
                        "toolConfig.toolChoice.tool: no tool named `{name}`"
                    ))?;
                let chosen = tools.remove(position);
                tools.insert(0, chosen);
            }
            _ => return Err("toolConfig.toolChoice: must be one of auto, any, tool".to_owned()),
        }
    }
    Ok(tools)
}

fn check_output_config(config: &Value) -> Result<(), String> {
    let format = config
        .get("textFormat")
        .ok_or("outputConfig.textFormat: is required")?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err("outputConfig.textFormat.type: must be json_schema".to_owned());
    }
    let schema = format
        .pointer("/structure/jsonSchema/schema")
        .and_then(Value::as_str)
        .ok_or("outputConfig.textFormat.structure.jsonSchema.schema: must be a string")?;
    serde_json::from_str::<Map<String, Value>>(schema)
        .map(|_| ())
        .map_err(|_| "outputConfig...jsonSchema.schema: not a JSON Schema object".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tool_round_trip_as_openai_messages() {
        let body = json!({
            "system": [{"text": "Be kind."}],
            "messages": [
                {"role": "user", "content": [{"text": "Weather?"}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "w", "input": {}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"c": 21}}]}}]},
            ],
            "toolConfig": {"tools": [{"toolSpec": {"name": "w", "inputSchema": {"json": {"type": "object"}}}}]},
        });
        let openai = read(&body).unwrap();
        let roles: Vec<&str> = openai["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(openai["messages"][3]["content"], "{\"c\":21}");
        assert_eq!(openai["tools"][0]["function"]["name"], "w");
    }

    #[test]
    fn refuses_what_bedrock_refuses() {
        let user = |content: Value| json!({"role": "user", "content": content});
        let cases = [
            json!({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}),
            json!({"messages": [user(json!([{"text": "a"}])), user(json!([{"text": "b"}]))]}),
            json!({"messages": [user(json!([{"text": " "}]))]}),
            json!({"messages": [user(json!([]))]}),
            json!({"messages": [
                user(json!([{"text": "a"}])),
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]},
                user(json!([{"toolResult": {"toolUseId": "t", "content": []}}])),
            ]}),
            json!({"messages": [user(json!([{"text": "a"}]))], "inferenceConfig": {"temperature": 1.5}}),
            json!({"messages": [user(json!([{"image": {"format": "bmp", "source": {"bytes": "AA=="}}}]))]}),
            json!({"messages": [user(json!([{"text": "a"}]))], "outputConfig": {"textFormat":
                {"type": "json_schema", "structure": {"jsonSchema": {"schema": {"type": "object"}}}}}}),
        ];
        for body in cases {
            assert!(read(&body).is_err(), "{body}");
        }
    }
}
