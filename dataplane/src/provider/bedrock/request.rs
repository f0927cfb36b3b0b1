//! The client's chat request as a Converse request. Converse has one top-level `system`, turns
//! that alternate `user`/`assistant` with content blocks, tool results inside user turns, only
//! inline image bytes, a 0–1 temperature, no `none` tool choice, and it refuses tool blocks in
//! the history unless a `toolConfig` is present (bedrock.md §2, edge-cases.md §13).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::super::{
    CallError, Target,
    chat::{ChatRequest, Content, Image, Message, OutputFormat, PartRef, Role, Tool, ToolMode},
};
use super::NAME;

/// The Converse body for `target`'s chat request.
pub fn converse(target: &Target<'_>) -> Result<Vec<u8>, CallError> {
    let request = ChatRequest::parse(target)?;
    request.only(NAME, &[])?;
    if request.parallel_tool_calls == Some(false) {
        return Err(CallError::unsupported(format!(
            "`parallel_tool_calls: false` is not supported by provider {NAME}: Converse cannot \
             limit the model to one tool call"
        ))
        .with_param("parallel_tool_calls"));
    }
    let mut system = Vec::new();
    let messages = turns(&request.messages, &mut system)?;
    let tool_config = tool_config(&request, &messages)?;
    let body = ConverseRequest {
        messages,
        system,
        inference_config: inference_config(&request)?,
        tool_config,
        output_config: output_config(&request)?,
    };
    serde_json::to_vec(&body)
        .map_err(|e| CallError::invalid_request(format!("the Converse request: {e}")))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseRequest<'a> {
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inference_config: Option<InferenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'a>>,
}

#[derive(Serialize)]
struct SystemBlock<'a> {
    text: &'a str,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Side {
    User,
    Assistant,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: Side,
    content: Vec<Block<'a>>,
}

/// A `ContentBlock` union member (exactly one key per object).
#[derive(Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
enum Block<'a> {
    Text(&'a str),
    Image {
        format: &'static str,
        source: ImageSource<'a>,
    },
    ToolUse {
        tool_use_id: Cow<'a, str>,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        content: Vec<ResultContent<'a>>,
    },
}

impl Block<'_> {
    fn is_tool_block(&self) -> bool {
        matches!(self, Self::ToolUse { .. } | Self::ToolResult { .. })
    }
}

#[derive(Serialize)]
struct ImageSource<'a> {
    /// Base64 text: a blob member is base64 in Converse's JSON, so a data URL's payload goes
    /// through without being decoded.
    bytes: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ResultContent<'a> {
    Text(&'a str),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    tools: Vec<ToolEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolEntry<'a> {
    tool_spec: ToolSpec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: InputSchema,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
struct InputSchema {
    json: Value,
}

/// `auto` is never sent: it is the default, and models without tool choice refuse the member.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolChoice<'a> {
    Any(Empty),
    Tool { name: &'a str },
}

/// `{}`.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputConfig<'a> {
    text_format: TextFormat<'a>,
}

#[derive(Serialize)]
struct TextFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    structure: Structure<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Structure<'a> {
    json_schema: JsonSchemaSpec<'a>,
}

#[derive(Serialize)]
struct JsonSchemaSpec<'a> {
    /// The JSON Schema as a string: Converse does not take it as an object.
    schema: String,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

/// The messages as alternating turns; `system` and `developer` messages, wherever they are,
/// become `system` blocks in order (Converse has no other place for them).
fn turns<'a>(
    messages: &'a [Message],
    system: &mut Vec<SystemBlock<'a>>,
) -> Result<Vec<Turn<'a>>, CallError> {
    let mut turns: Vec<Turn<'a>> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let (side, blocks) = match message.role {
            Role::System | Role::Developer => {
                let texts = texts(&message.content, index)?;
                system.extend(texts.into_iter().map(|text| SystemBlock { text }));
                continue;
            }
            Role::User => (Side::User, user_blocks(message, index)?),
            Role::Assistant => (Side::Assistant, assistant_blocks(message, index)?),
            Role::Tool => (Side::User, vec![tool_result(message, index)?]),
            Role::Function => {
                return Err(CallError::unsupported(format!(
                    "messages with role `function` are not supported by provider {NAME}; use \
                     `tool` messages"
                ))
                .with_param("messages"));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        // Converse wants the roles to alternate: a run of tool results and user messages is one
        // user turn, a run of assistant messages one assistant turn.
        match turns.last_mut() {
            Some(last) if last.role == side => last.content.extend(blocks),
            _ => turns.push(Turn {
                role: side,
                content: blocks,
            }),
        }
    }
    for turn in &mut turns {
        if turn.role == Side::User {
            // Tool results answer the previous turn's calls and must lead the turn.
            turn.content
                .sort_by_key(|block| !matches!(block, Block::ToolResult { .. }));
        }
    }
    Ok(turns)
}

/// The non-empty texts of a message that may hold only text (Converse refuses blank text).
fn texts(content: &Option<Content>, index: usize) -> Result<Vec<&str>, CallError> {
    let mut out = Vec::new();
    match content {
        None => {}
        Some(Content::Text(text)) => out.push(text.as_str()),
        Some(Content::Parts(parts)) => {
            for part in parts {
                match part.read(NAME)? {
                    PartRef::Text(text) => out.push(text),
                    PartRef::Image(_) => {
                        return Err(CallError::unsupported(format!(
                            "messages[{index}]: images are supported in user messages only"
                        ))
                        .with_param("messages"));
                    }
                }
            }
        }
    }
    // Bedrock refuses blank text blocks, whitespace-only ones included.
    out.retain(|text| !text.trim().is_empty());
    Ok(out)
}

fn user_blocks(message: &Message, index: usize) -> Result<Vec<Block<'_>>, CallError> {
    let mut blocks = Vec::new();
    match &message.content {
        None => {}
        Some(Content::Text(text)) => blocks.push(Block::Text(text)),
        Some(Content::Parts(parts)) => {
            for part in parts {
                blocks.push(match part.read(NAME)? {
                    PartRef::Text(text) => Block::Text(text),
                    PartRef::Image(image) => image_block(image, index)?,
                });
            }
        }
    }
    blocks.retain(|block| !matches!(block, Block::Text(text) if text.trim().is_empty()));
    Ok(blocks)
}

fn image_block(image: Image<'_>, index: usize) -> Result<Block<'_>, CallError> {
    match image {
        Image::Base64 { media_type, data } => Ok(Block::Image {
            format: image_format(media_type).ok_or_else(|| {
                CallError::unsupported(format!(
                    "messages[{index}]: image type `{media_type}` is not supported by provider \
                     {NAME} (png, jpeg, gif and webp are)"
                ))
                .with_param("messages")
            })?,
            source: ImageSource { bytes: data },
        }),
        Image::Url(_) => Err(CallError::unsupported(format!(
            "messages[{index}]: image URLs are not supported by provider {NAME}: Bedrock takes \
             only inline image bytes and the gateway does not fetch URLs; send the image as a \
             base64 `data:` URL"
        ))
        .with_param("messages")),
    }
}

/// Converse's `format` for a media type.
fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type.to_ascii_lowercase().as_str() {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn assistant_blocks(message: &Message, index: usize) -> Result<Vec<Block<'_>>, CallError> {
    let mut blocks: Vec<Block<'_>> = texts(&message.content, index)?
        .into_iter()
        .map(Block::Text)
        .collect();
    for call in message.tool_calls() {
        let input = call.function.arguments_object().map_err(|mut e| {
            e.message = format!("messages[{index}]: {}", e.message);
            e
        })?;
        blocks.push(Block::ToolUse {
            tool_use_id: tool_use_id(&call.id),
            name: &call.function.name,
            input,
        });
    }
    Ok(blocks)
}

/// A tool-call id as Bedrock takes it (1 to 64 of `[a-zA-Z0-9_.:-]`): other providers' ids
/// (Gemini's carry thought signatures and run long) are replaced by a hash of themselves, the
/// same for the call and its result, so pairs still match.
fn tool_use_id(id: &str) -> Cow<'_, str> {
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if valid {
        Cow::Borrowed(id)
    } else {
        let digest = Sha256::digest(id.as_bytes());
        Cow::Owned(format!("tooluse_{}", hex::encode(&digest[..16])))
    }
}

fn tool_result(message: &Message, index: usize) -> Result<Block<'_>, CallError> {
    let id = message.tool_call_id.as_deref().ok_or_else(|| {
        CallError::invalid_request(format!(
            "messages[{index}]: a tool message needs a tool_call_id"
        ))
        .with_param("messages")
    })?;
    Ok(Block::ToolResult {
        tool_use_id: tool_use_id(id),
        // An empty result is an empty list: a blank text block would be refused.
        content: texts(&message.content, index)?
            .into_iter()
            .map(ResultContent::Text)
            .collect(),
    })
}

/// The `toolConfig`: the client's tools with its choice; none for `tool_choice: "none"` (which
/// Converse cannot say) unless the history holds tool blocks, which Converse refuses without a
/// `toolConfig`. Then the tools stay with the default choice, `auto` (bedrock.md §8), built from
/// the names the history calls when the request brings no tools: the model may still call one.
fn tool_config<'a>(
    request: &'a ChatRequest,
    turns: &[Turn<'a>],
) -> Result<Option<ToolConfig<'a>>, CallError> {
    let mode = request.tool_mode()?;
    let tools = request
        .tools()
        .iter()
        .map(tool_entry)
        .collect::<Result<Vec<_>, _>>()?;
    let choice = match mode {
        ToolMode::Auto | ToolMode::None => None,
        ToolMode::Required => Some(ToolChoice::Any(Empty {})),
        ToolMode::Function(name) => Some(ToolChoice::Tool { name }),
    };
    if choice.is_some() && tools.is_empty() {
        return Err(
            CallError::invalid_request("this tool_choice needs `tools` to choose from")
                .with_param("tool_choice"),
        );
    }
    if mode != ToolMode::None && !tools.is_empty() {
        return Ok(Some(ToolConfig {
            tools,
            tool_choice: choice,
        }));
    }
    let blocks = || turns.iter().flat_map(|turn| &turn.content);
    if !blocks().any(Block::is_tool_block) {
        return Ok(None);
    }
    if !tools.is_empty() {
        return Ok(Some(ToolConfig {
            tools,
            tool_choice: None,
        }));
    }
    let mut named: Vec<&'a str> = Vec::new();
    for block in blocks() {
        if let Block::ToolUse { name, .. } = block
            && !named.contains(name)
        {
            named.push(name);
        }
    }
    if named.is_empty() {
        return Ok(None);
    }
    let tools = named
        .into_iter()
        .map(|name| ToolEntry {
            tool_spec: ToolSpec {
                name,
                description: None,
                input_schema: InputSchema {
                    json: json!({"type": "object", "properties": {}}),
                },
                strict: None,
            },
        })
        .collect();
    Ok(Some(ToolConfig {
        tools,
        tool_choice: None,
    }))
}

fn tool_entry(tool: &Tool) -> Result<ToolEntry<'_>, CallError> {
    if tool.kind != "function" {
        return Err(CallError::unsupported(format!(
            "tools of type `{}` are not supported by provider {NAME}",
            tool.kind
        ))
        .with_param("tools"));
    }
    let function = &tool.function;
    Ok(ToolEntry {
        tool_spec: ToolSpec {
            name: &function.name,
            description: function.description.as_deref(),
            input_schema: InputSchema {
                json: function.schema(),
            },
            strict: function.strict,
        },
    })
}

fn inference_config(request: &ChatRequest) -> Result<Option<InferenceConfig>, CallError> {
    if let Some(temperature) = request.temperature
        && !(0.0..=1.0).contains(&temperature)
    {
        // Scaling OpenAI's 0–2 onto 0–1 would change what every other value means.
        return Err(CallError::unsupported(format!(
            "temperature {temperature} is outside the 0–1 range of provider {NAME}"
        ))
        .with_param("temperature"));
    }
    let mut stop_sequences = request.stop_sequences();
    stop_sequences.retain(|s| !s.is_empty());
    let config = InferenceConfig {
        max_tokens: request.max_output_tokens(),
        temperature: request.temperature,
        top_p: request.top_p,
        stop_sequences,
    };
    let empty = config.max_tokens.is_none()
        && config.temperature.is_none()
        && config.top_p.is_none()
        && config.stop_sequences.is_empty();
    Ok((!empty).then_some(config))
}

/// JSON output as Converse's structured output. `json_object` asks for any JSON object, which
/// is the schema `{"type":"object"}`.
fn output_config(request: &ChatRequest) -> Result<Option<OutputConfig<'_>>, CallError> {
    let (schema, name, description) = match request.output_format()? {
        OutputFormat::Text => return Ok(None),
        OutputFormat::JsonObject => (json!({"type": "object"}), "json_object", None),
        OutputFormat::JsonSchema(spec) => (spec.schema(), spec.name(), spec.description.as_deref()),
    };
    Ok(Some(OutputConfig {
        text_format: TextFormat {
            kind: "json_schema",
            structure: Structure {
                json_schema: JsonSchemaSpec {
                    schema: schema.to_string(),
                    name,
                    description,
                },
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use modelgate_crds::compiled::CompiledDeployment;

    use super::super::super::Endpoint;
    use super::*;

    #[test]
    fn tool_call_ids_bedrock_refuses_are_hashed_the_same_for_call_and_result() {
        assert_eq!(tool_use_id("call_abc.1:2-x_y"), "call_abc.1:2-x_y");
        let long = format!("call_1__ts__{}", "A".repeat(300));
        let hashed = tool_use_id(&long);
        assert!(
            hashed.len() <= 64 && hashed.starts_with("tooluse_"),
            "{hashed}"
        );
        assert_eq!(hashed, tool_use_id(&long), "deterministic");
        assert_ne!(
            tool_use_id("functions.get weather"),
            tool_use_id("functions.get_weather2")
        );
        assert!(
            tool_use_id("").starts_with("tooluse_"),
            "empty ids are refused too"
        );
    }
    use crate::request::JsonRequest;

    fn converse_json(request: Value) -> Result<Value, CallError> {
        let request = JsonRequest::parse(Bytes::from(request.to_string())).unwrap();
        let deployment: CompiledDeployment = serde_json::from_value(json!({
            "id": "ns/g/d", "name": "d", "provider": "bedrock", "model": "m", "weight": 1,
            "tags": [], "timeouts": {}, "region": "us-east-1",
        }))
        .unwrap();
        let target = Target {
            endpoint: Endpoint::ChatCompletions,
            request: &request,
            native: None,
            stream: false,
            deployment: &deployment,
        };
        converse(&target).map(|body| serde_json::from_slice(&body).unwrap())
    }

    fn call(id: &str, name: &str) -> Value {
        json!({"id": id, "type": "function", "function": {"name": name, "arguments": "{}"}})
    }

    #[test]
    fn tool_results_lead_their_user_turn_whatever_the_message_order() {
        let body = converse_json(json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": null, "tool_calls": [call("a", "f")]},
            {"role": "user", "content": "also this"},
            {"role": "tool", "tool_call_id": "a", "content": "done"},
        ]}))
        .unwrap();
        let turns = body["messages"].as_array().unwrap();
        assert_eq!(turns.len(), 3, "user, assistant, one merged user turn");
        assert_eq!(
            turns[2]["content"],
            json!([
                {"toolResult": {"toolUseId": "a", "content": [{"text": "done"}]}},
                {"text": "also this"},
            ])
        );
    }

    #[test]
    fn empty_messages_leave_no_blank_blocks_and_their_neighbours_merge() {
        let body = converse_json(json!({"messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "two"}]},
        ]}))
        .unwrap();
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [{"text": "one"}, {"text": "two"}]}])
        );
    }

    #[test]
    fn a_history_without_tools_declares_each_called_name_once() {
        let body = converse_json(json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": null, "tool_calls": [call("a", "f"), call("b", "g"), call("c", "f")]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"},
            {"role": "tool", "tool_call_id": "c", "content": "3"},
        ], "tool_choice": "none"}))
        .unwrap();
        let names: Vec<&str> = body["toolConfig"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["toolSpec"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["f", "g"]);
        assert!(body["toolConfig"].get("toolChoice").is_none());
    }

    #[test]
    fn images_need_a_format_converse_knows() {
        assert_eq!(image_format("image/PNG"), Some("png"));
        assert_eq!(image_format("image/jpg"), Some("jpeg"));
        assert_eq!(image_format("image/webp"), Some("webp"));
        assert_eq!(image_format("image/svg+xml"), None);
        let error = converse_json(json!({"messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]}]}))
        .unwrap_err();
        assert_eq!(error.param.as_deref(), Some("messages"));
    }

    #[test]
    fn a_temperature_of_exactly_one_is_allowed() {
        let body = converse_json(json!({"messages": [{"role": "user", "content": "hi"}],
            "temperature": 1.0, "stop": ""}))
        .unwrap();
        assert_eq!(body["inferenceConfig"], json!({"temperature": 1.0}));
    }
}
