//! A Gemini `GenerateContentRequest`, checked the way Google checks it where a translator can go
//! wrong (unknown field names are refused, turns need parts, every function call of a turn is
//! answered in the next, the first call of a model turn carries its thought signature, function
//! responses are objects), then read into the OpenAI-like view `reply::answer` decides on.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Map, Value, json};

/// Google's stand-in for a signature the client does not have.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";
/// The fake's signatures are these bytes and the function's name, base64 (with `+` and `/`, so
/// a translator that re-encodes them must do it right).
const SIGNATURE_PREFIX: &[u8] = b"\xfb\xffsig:";

const REQUEST_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "safetySettings",
    "generationConfig",
    "cachedContent",
];
const GENERATION_FIELDS: &[&str] = &[
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "mediaResolution",
];
/// The members of a part that hold its data (a part holds exactly one).
const PART_DATA: &[&str] = &[
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
];
const PART_EXTRAS: &[&str] = &["thought", "thoughtSignature", "videoMetadata"];

/// The signature the fake puts on a call of `name`.
pub fn signature_for(name: &str) -> String {
    STANDARD.encode([SIGNATURE_PREFIX, name.as_bytes()].concat())
}

fn is_valid_signature(signature: &str, name: &str) -> bool {
    signature == SKIP_SIGNATURE
        || STANDARD
            .decode(signature)
            .is_ok_and(|bytes| bytes == [SIGNATURE_PREFIX, name.as_bytes()].concat())
}

/// The request as OpenAI-shaped JSON (`messages`, `tools`, `response_format`), or Google's
/// message for a 400 INVALID_ARGUMENT.
pub fn openai_view(body: &Value, vertex: bool) -> Result<Value, String> {
    let request = body.as_object().ok_or("Invalid JSON payload received.")?;
    let mut allowed = REQUEST_FIELDS.to_vec();
    if vertex {
        allowed.push("labels");
    }
    known_fields(request, &allowed, "")?;
    let mut messages = Vec::new();
    if let Some(system) = request.get("systemInstruction") {
        messages.push(json!({"role": "system", "content": system_text(system)?}));
    }
    let contents = request
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    let mut unanswered = 0;
    for (i, content) in contents.iter().enumerate() {
        let role = match content.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "model")) => role,
            None if !vertex => "user",
            None => {
                return Err(format!(
                    "Please use a valid role: user, model. (contents[{i}].role is missing)"
                ));
            }
            Some(other) => return Err(format!("Please use a valid role: user, model. ({other})")),
        };
        let parts = content
            .get("parts")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."))?;
        for part in parts {
            check_part(part)?;
        }
        let responses = parts
            .iter()
            .filter(|p| p.get("functionResponse").is_some())
            .count();
        if unanswered != 0 && (role != "user" || responses != unanswered) {
            return Err("Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.".to_owned());
        }
        unanswered = 0;
        match role {
            "model" => {
                let message = model_message(parts)?;
                unanswered = message["tool_calls"].as_array().map_or(0, Vec::len);
                messages.push(message);
            }
            _ => messages.extend(user_messages(parts)?),
        }
    }
    let mut view = json!({"messages": messages});
    if let Some(tools) = tools(request)? {
        view["tools"] = tools;
    }
    if let Some(config) = request.get("generationConfig").and_then(Value::as_object) {
        known_fields(config, GENERATION_FIELDS, "generation_config.")?;
        let json_mode =
            config.get("responseMimeType").and_then(Value::as_str) == Some("application/json");
        if (config.contains_key("responseJsonSchema") || config.contains_key("responseSchema"))
            && !json_mode
        {
            return Err(
                "responseMimeType must be application/json when a response schema is set"
                    .to_owned(),
            );
        }
        if json_mode {
            view["response_format"] = json!({"type": "json_object"});
        }
    }
    Ok(view)
}

fn known_fields(object: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), String> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at '{prefix}': Cannot find field."
        )),
        None => Ok(()),
    }
}

fn check_part(part: &Value) -> Result<(), String> {
    let object = part.as_object().ok_or("a part must be an object")?;
    let allowed: Vec<&str> = PART_DATA.iter().chain(PART_EXTRAS).copied().collect();
    known_fields(object, &allowed, "contents.parts")?;
    if object
        .keys()
        .filter(|k| PART_DATA.contains(&k.as_str()))
        .count()
        != 1
    {
        return Err(
            "a part must hold exactly one kind of data (oneof field 'data' is already set)"
                .to_owned(),
        );
    }
    if let Some(response) = object.get("functionResponse") {
        if response.get("name").and_then(Value::as_str).is_none() {
            return Err("functionResponse.name is required".to_owned());
        }
        if !response.get("response").is_some_and(Value::is_object) {
            return Err("functionResponse.response must be an object".to_owned());
        }
    }
    if let Some(blob) = object.get("inlineData")
        && (blob.get("mimeType").is_none() || blob.get("data").is_none())
    {
        return Err("inlineData needs mimeType and data".to_owned());
    }
    if let Some(file) = object.get("fileData")
        && file.get("fileUri").is_none()
    {
        return Err("fileData needs fileUri".to_owned());
    }
    Ok(())
}

fn system_text(system: &Value) -> Result<String, String> {
    let parts = system
        .get("parts")
        .and_then(Value::as_array)
        .ok_or("systemInstruction needs parts")?;
    let mut texts = Vec::new();
    for part in parts {
        texts.push(
            part.get("text")
                .and_then(Value::as_str)
                .ok_or("systemInstruction holds text parts only")?,
        );
    }
    Ok(texts.join("\n"))
}

/// A model turn: its text and its calls, the first of which must carry a signature.
fn model_message(parts: &[Value]) -> Result<Value, String> {
    let mut text = Vec::new();
    let mut calls = Vec::new();
    for part in parts {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push(t);
        }
        if let Some(call) = part.get("functionCall") {
            let name = call
                .get("name")
                .and_then(Value::as_str)
                .ok_or("functionCall.name is required")?;
            if calls.is_empty() {
                let signature = part.get("thoughtSignature").and_then(Value::as_str);
                if !signature.is_some_and(|s| is_valid_signature(s, name)) {
                    return Err(format!(
                        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. ({name})"
                    ));
                }
            }
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            calls.push(
                json!({"id": format!("fake-{}", calls.len()), "type": "function",
                              "function": {"name": name, "arguments": args.to_string()}}),
            );
        }
    }
    let mut message = json!({"role": "assistant", "content": text.join("")});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

/// A user turn: a tool message per function response, then the text.
fn user_messages(parts: &[Value]) -> Result<Vec<Value>, String> {
    let mut messages = Vec::new();
    let mut text = Vec::new();
    for part in parts {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push(t);
        }
        if let Some(response) = part.pointer("/functionResponse/response") {
            // `{"content": "..."}` is how plain tool text is wrapped; show it as the text.
            let content = match response.as_object() {
                Some(object) if object.len() == 1 => object
                    .get("content")
                    .and_then(Value::as_str)
                    .map_or_else(|| response.to_string(), str::to_owned),
                _ => response.to_string(),
            };
            messages.push(json!({"role": "tool", "content": content}));
        }
    }
    if !text.is_empty() {
        messages.push(json!({"role": "user", "content": text.join(" ")}));
    }
    Ok(messages)
}

/// The declared functions as OpenAI tools: none under mode NONE, the allowed one first.
fn tools(request: &Map<String, Value>) -> Result<Option<Value>, String> {
    let mut names = Vec::new();
    for tool in request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for declaration in tool
            .get("functionDeclarations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = declaration
                .get("name")
                .and_then(Value::as_str)
                .ok_or("functionDeclarations[].name is required")?;
            if declaration.get("parameters").is_some()
                && declaration.get("parametersJsonSchema").is_some()
            {
                return Err("parameters and parametersJsonSchema are mutually exclusive".to_owned());
            }
            names.push(name);
        }
    }
    let config = request
        .get("toolConfig")
        .and_then(|c| c.get("functionCallingConfig"));
    let mode = config.and_then(|c| c.get("mode")).and_then(Value::as_str);
    if names.is_empty() || mode == Some("NONE") {
        return Ok(None);
    }
    if let Some(allowed) = config
        .and_then(|c| c.pointer("/allowedFunctionNames/0"))
        .and_then(Value::as_str)
    {
        let position = names
            .iter()
            .position(|n| *n == allowed)
            .ok_or("allowedFunctionNames names an undeclared function")?;
        let name = names.remove(position);
        names.insert(0, name);
    }
    Ok(Some(
        names
            .iter()
            .map(|name| json!({"type": "function", "function": {"name": name}}))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_round_trip_reads_as_tool_history() {
        let body = json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": signature_for("get_weather")}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "21C"}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]
        });
        let view = openai_view(&body, true).unwrap();
        assert_eq!(
            view["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            view["messages"][3],
            json!({"role": "tool", "content": "21C"})
        );
        assert_eq!(view["tools"][0]["function"]["name"], "get_weather");
    }

    #[test]
    fn what_google_refuses_is_refused() {
        let call = |signature: Value| {
            json!({"contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f"}, "thoughtSignature": signature}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
            ]})
        };
        assert!(openai_view(&call(json!(SKIP_SIGNATURE)), false).is_ok());
        assert!(
            openai_view(&call(json!("bm9wZQ==")), false)
                .unwrap_err()
                .contains("thought_signature")
        );
        let unknown = json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxTokens": 5}});
        assert!(
            openai_view(&unknown, false)
                .unwrap_err()
                .contains("Unknown name \"maxTokens\"")
        );
        let no_role = json!({"contents": [{"parts": [{"text": "hi"}]}]});
        assert!(openai_view(&no_role, false).is_ok());
        assert!(openai_view(&no_role, true).is_err(), "Vertex wants roles");
        let unanswered = json!({"contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f"}, "thoughtSignature": SKIP_SIGNATURE}, {"functionCall": {"name": "g"}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
        ]});
        assert!(
            openai_view(&unanswered, false)
                .unwrap_err()
                .contains("number of function response parts")
        );
    }
}
