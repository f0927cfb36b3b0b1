//! The client's chat request as Cohere's `/v2/chat` body.
//!
//! - System and developer messages stay in `messages` as `system` messages, where they were.
//! - Images go as `image_url` parts (https or data URLs; Cohere fetches URLs itself).
//! - `tool_choice`: `required` → `REQUIRED`, `none` → `NONE`, auto is left out; a named function
//!   is `REQUIRED` with only that tool sent (Cohere has no named choice). `strict: true` on any
//!   tool turns on Cohere's `strict_tools`, which covers all tools.
//! - `response_format`: `json_object` as is, `json_schema` as `json_object` with the schema;
//!   Cohere refuses JSON mode together with tools, so that combination is a 400 here.
//! - `top_p` is Cohere's `p`, kept within its 0.01–0.99 (1.0, OpenAI's default, samples from
//!   everything, as 0.99 nearly does); penalties are kept within Cohere's 0–1.
//! - A message's `name` has no place at Cohere and is left out.
//! - `temperature` above 1 (Cohere's maximum), more than 5 stop sequences, `n` > 1,
//!   `parallel_tool_calls: false`, logprobs and any other parameter Cohere has no place for
//!   are 400s naming them.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::{
    super::{
        CallError, Target,
        chat::{ChatRequest, Message, OutputFormat, PartRef, Role, Tool, ToolMode},
        openai_message::{self, ContentOut, ToolCallOut},
    },
    NAME,
};

/// OpenAI parameters carried besides the typed ones.
const SUPPORTED: &[&str] = &["seed", "frequency_penalty", "presence_penalty"];
const MAX_STOP_SEQUENCES: usize = 5;

pub fn chat(target: &Target<'_>) -> Result<bytes::Bytes, CallError> {
    let mut request = ChatRequest::parse(target)?;
    // `logprobs: false` asks for nothing.
    if request.rest.get("logprobs") == Some(&Value::Bool(false)) {
        request.rest.remove("logprobs");
    }
    request.only(NAME, SUPPORTED)?;
    if request.parallel_tool_calls == Some(false) {
        return Err(CallError::unsupported(format!(
            "`parallel_tool_calls: false` is not supported by provider {NAME}"
        ))
        .with_param("parallel_tool_calls"));
    }
    if request.temperature.is_some_and(|t| t > 1.0) {
        return Err(CallError::invalid_request(format!(
            "provider {NAME} takes a temperature between 0 and 1"
        ))
        .with_param("temperature"));
    }
    let stop_sequences = request.stop_sequences();
    if stop_sequences.len() > MAX_STOP_SEQUENCES {
        return Err(CallError::invalid_request(format!(
            "provider {NAME} takes at most {MAX_STOP_SEQUENCES} stop sequences"
        ))
        .with_param("stop"));
    }
    let (tools, tool_choice) = tools(&request)?;
    let response_format = response_format(&request)?;
    if response_format.is_some() && !tools.is_empty() {
        return Err(CallError::unsupported(format!(
            "`response_format` together with `tools` is not supported by provider {NAME}"
        ))
        .with_param("response_format"));
    }
    let body = Body {
        model: &target.deployment.model,
        messages: request
            .messages
            .iter()
            .map(message)
            .collect::<Result<_, _>>()?,
        strict_tools: tools
            .iter()
            .any(|t| t.function.strict == Some(true))
            .then_some(true),
        tools: tools.iter().map(|t| ToolOut::from(*t)).collect(),
        tool_choice,
        response_format,
        stop_sequences,
        max_tokens: request.max_output_tokens(),
        temperature: request.temperature,
        p: request.top_p.map(|p| p.clamp(0.01, 0.99)),
        frequency_penalty: penalty(&request, "frequency_penalty")?,
        presence_penalty: penalty(&request, "presence_penalty")?,
        seed: request.rest.get("seed"),
        stream: target.stream,
    };
    serde_json::to_vec(&body)
        .map(bytes::Bytes::from)
        .map_err(|e| CallError::invalid_request(format!("the chat request: {e}")))
}

/// The tools to send and Cohere's `tool_choice`.
fn tools(request: &ChatRequest) -> Result<(Vec<&Tool>, Option<&'static str>), CallError> {
    let all = request.tools();
    if let Some(tool) = all.iter().find(|t| t.kind != "function") {
        return Err(CallError::unsupported(format!(
            "tools of type `{}` are not supported by provider {NAME}",
            tool.kind
        ))
        .with_param("tools"));
    }
    let mode = request.tool_mode()?;
    if all.is_empty() {
        if let ToolMode::Function(name) = mode {
            return Err(CallError::invalid_request(format!(
                "tool_choice names `{name}`, but the request has no tools"
            ))
            .with_param("tool_choice"));
        }
        return Ok((Vec::new(), None));
    }
    Ok(match mode {
        ToolMode::Auto => (all.iter().collect(), None),
        ToolMode::None => (all.iter().collect(), Some("NONE")),
        ToolMode::Required => (all.iter().collect(), Some("REQUIRED")),
        ToolMode::Function(name) => {
            let Some(tool) = all.iter().find(|t| t.function.name == name) else {
                return Err(CallError::invalid_request(format!(
                    "tool_choice names `{name}`, which is not among the tools"
                ))
                .with_param("tool_choice"));
            };
            (vec![tool], Some("REQUIRED"))
        }
    })
}

fn response_format(request: &ChatRequest) -> Result<Option<ResponseFormatOut>, CallError> {
    Ok(match request.output_format()? {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(ResponseFormatOut {
            kind: "json_object",
            json_schema: None,
        }),
        OutputFormat::JsonSchema(schema) => Some(ResponseFormatOut {
            kind: "json_object",
            json_schema: Some(schema.schema()),
        }),
    })
}

/// A penalty within Cohere's 0–1 (OpenAI allows −2–2).
fn penalty(request: &ChatRequest, key: &'static str) -> Result<Option<f64>, CallError> {
    match request.rest.get(key) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .map(|v| Some(v.clamp(0.0, 1.0)))
            .ok_or_else(|| {
                CallError::invalid_request(format!("`{key}` must be a number")).with_param(key)
            }),
    }
}

fn message(message: &Message) -> Result<MessageOut<'_>, CallError> {
    Ok(match message.role {
        Role::System | Role::Developer => MessageOut::System {
            content: text_only(message, "system")?,
        },
        Role::User => MessageOut::User {
            content: openai_message::content(message.content.as_ref(), NAME)?,
        },
        Role::Assistant => {
            let text = text_only(message, "assistant")?;
            MessageOut::Assistant {
                content: (!text.is_empty()).then_some(text),
                tool_calls: message
                    .tool_calls()
                    .iter()
                    .map(|call| openai_message::tool_call(call, Cow::Borrowed(&call.id)))
                    .collect::<Result<_, _>>()?,
            }
        }
        Role::Tool => MessageOut::Tool {
            tool_call_id: message.tool_call_id.as_deref().ok_or_else(|| {
                CallError::invalid_request("a `tool` message needs a `tool_call_id`")
                    .with_param("messages")
            })?,
            content: text_only(message, "tool")?,
        },
        Role::Function => {
            return Err(CallError::unsupported(format!(
                "messages with role `function` are not supported by provider {NAME}; use `tool`"
            ))
            .with_param("messages"));
        }
    })
}

/// The text of a message whose role takes text only at Cohere.
fn text_only(message: &Message, role: &str) -> Result<String, CallError> {
    let mut text = String::new();
    for part in message.parts() {
        match part.read(NAME)? {
            PartRef::Text(piece) => text.push_str(piece),
            PartRef::Image(_) => {
                return Err(CallError::unsupported(format!(
                    "images in {role} messages are not supported by provider {NAME}"
                ))
                .with_param("messages"));
            }
        }
    }
    Ok(text)
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<MessageOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_tools: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormatOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<&'a Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum MessageOut<'a> {
    System {
        content: String,
    },
    User {
        content: ContentOut<'a>,
    },
    Assistant {
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCallOut<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: String,
    },
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

impl<'a> From<&'a Tool> for ToolOut<'a> {
    fn from(tool: &'a Tool) -> Self {
        Self {
            kind: "function",
            function: FunctionOut {
                name: &tool.function.name,
                description: tool.function.description.as_deref(),
                parameters: tool.function.schema(),
            },
        }
    }
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    /// Required by Cohere: a tool without parameters gets an empty object schema.
    parameters: Value,
}

#[derive(Serialize)]
struct ResponseFormatOut {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<Value>,
}
