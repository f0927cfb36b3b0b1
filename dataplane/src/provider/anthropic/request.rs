//! The Messages request body, built from the client's chat request: sampling, tools and tool
//! choice, JSON output (as a forced tool, `json_mode`), and the conversation (`turns`).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    json_mode,
    turns::{Block, Turn, conversation},
};
use crate::provider::{
    CallError,
    chat::{ChatRequest, Stop, ToolMode},
};

/// The output cap sent when the client names none: Anthropic requires `max_tokens` and has no
/// default. 4096 is within every Claude model's output limit (the oldest cap at 4096) and
/// long enough for ordinary answers; clients wanting more say so.
pub(in crate::provider) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// How the body is addressed, which differs between the services that serve Claude.
#[derive(Debug, Clone, Copy)]
pub(in crate::provider) struct Envelope<'a> {
    /// The `model` member: Anthropic's own API. Vertex AI and Bedrock name the model in the URL
    /// and take `None`.
    pub model: Option<&'a str>,
    /// The `anthropic_version` member: `vertex-2023-10-16` on Vertex AI, `bedrock-2023-05-31`
    /// on Bedrock. Anthropic's own API takes the version as a header and `None` here.
    pub anthropic_version: Option<&'a str>,
    /// Whether to write `"stream": true`: for a streamed call to Anthropic or Vertex AI (Bedrock
    /// streams by URL and takes `false`).
    pub stream: bool,
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anthropic_version: Option<&'a str>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'a>>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct ToolDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToolChoice<'a> {
    Auto {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
    Any {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
    Tool {
        name: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
    None,
}

/// The Messages body for `chat`, or a 400 for what Anthropic cannot carry. `provider` names the
/// service in messages (`anthropic`, `vertex`, ...).
pub(in crate::provider) fn messages_body(
    chat: &ChatRequest,
    envelope: Envelope<'_>,
    provider: &str,
) -> Result<Bytes, CallError> {
    // Every OpenAI member this translation carries is a named field of `ChatRequest`; whatever
    // is left (seed, penalties, logprobs, reasoning_effort, ...) has no Anthropic equivalent.
    chat.only(provider, &[])?;
    let conversation = conversation(&chat.messages, provider)?;
    let (tools, choice) = match json_mode::tool(chat, provider)? {
        Some((description, schema)) => {
            // Checked as if there were no tools: `required` or a named function has nothing to
            // call; `auto` and `none` give way to the forced call.
            tool_choice(chat, &[])?;
            let answer_tool = ToolDef {
                name: json_mode::TOOL,
                description: Some(Cow::Owned(description)),
                input_schema: schema,
                strict: None,
            };
            let forced = ToolChoice::Tool {
                name: json_mode::TOOL,
                disable_parallel_tool_use: false,
            };
            (vec![answer_tool], Some(forced))
        }
        None => {
            let tools = tools(chat, provider)?;
            let choice = tool_choice(chat, &tools)?;
            (tools, choice)
        }
    };
    let body = MessagesRequest {
        model: envelope.model,
        anthropic_version: envelope.anthropic_version,
        max_tokens: chat.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        system: conversation.system,
        messages: conversation.turns,
        stop_sequences: stop_sequences(chat.stop.as_ref()),
        temperature: temperature(chat.temperature, provider)?,
        top_p: chat.top_p,
        tool_choice: choice,
        tools,
        stream: envelope.stream,
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| CallError::invalid_request(format!("the request cannot be written: {e}")))
}

/// OpenAI's temperature runs 0–2, Anthropic's 0–1. Clamping or halving would silently change
/// what a client asked for, so a value above 1 is a 400 that says so.
fn temperature(value: Option<f64>, provider: &str) -> Result<Option<f64>, CallError> {
    match value {
        Some(t) if !(0.0..=1.0).contains(&t) => Err(CallError::unsupported(format!(
            "`temperature` {t} is outside 0 to 1, the range provider {provider} accepts"
        ))
        .with_param("temperature")),
        other => Ok(other),
    }
}

fn stop_sequences(stop: Option<&Stop>) -> Vec<&str> {
    let all: Vec<&str> = match stop {
        None => Vec::new(),
        Some(Stop::One(one)) => vec![one.as_str()],
        Some(Stop::Many(many)) => many.iter().map(String::as_str).collect(),
    };
    all.into_iter().filter(|s| !s.is_empty()).collect()
}

fn tools<'a>(chat: &'a ChatRequest, provider: &str) -> Result<Vec<ToolDef<'a>>, CallError> {
    chat.tools()
        .iter()
        .map(|tool| {
            if tool.kind != "function" {
                return Err(CallError::unsupported(format!(
                    "tools of type `{}` are not supported by provider {provider}",
                    tool.kind
                ))
                .with_param("tools"));
            }
            let mut schema = tool.function.schema();
            // Anthropic insists on an object schema; OpenAI clients may send `{}` for "no
            // parameters".
            if let Value::Object(map) = &mut schema {
                map.entry("type").or_insert_with(|| json!("object"));
            }
            Ok(ToolDef {
                name: &tool.function.name,
                description: tool.function.description.as_deref().map(Cow::Borrowed),
                input_schema: schema,
                strict: tool.function.strict,
            })
        })
        .collect()
}

/// `tool_choice` and `parallel_tool_calls`: `required` is Anthropic's `any`, a named function
/// its `tool`, and sequential calls `disable_parallel_tool_use`.
fn tool_choice<'a>(
    chat: &'a ChatRequest,
    tools: &[ToolDef<'_>],
) -> Result<Option<ToolChoice<'a>>, CallError> {
    let serial = chat.parallel_tool_calls == Some(false);
    let mode = chat.tool_mode()?;
    if tools.is_empty() {
        return match mode {
            ToolMode::Auto | ToolMode::None => Ok(None),
            ToolMode::Required | ToolMode::Function(_) => Err(CallError::invalid_request(
                "`tool_choice` asks for a tool call, but the request has no tools",
            )
            .with_param("tool_choice")),
        };
    }
    Ok(match mode {
        ToolMode::Auto if chat.tool_choice.is_none() && !serial => None,
        ToolMode::Auto => Some(ToolChoice::Auto {
            disable_parallel_tool_use: serial,
        }),
        ToolMode::None => Some(ToolChoice::None),
        ToolMode::Required => Some(ToolChoice::Any {
            disable_parallel_tool_use: serial,
        }),
        ToolMode::Function(name) => {
            if !tools.iter().any(|t| t.name == name) {
                return Err(CallError::invalid_request(format!(
                    "`tool_choice` names `{name}`, which is not among the tools"
                ))
                .with_param("tool_choice"));
            }
            Some(ToolChoice::Tool {
                name,
                disable_parallel_tool_use: serial,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(request: Value, envelope: Envelope<'_>) -> Result<Value, CallError> {
        let chat: ChatRequest = serde_json::from_value(request).unwrap();
        messages_body(&chat, envelope, "anthropic").map(|b| serde_json::from_slice(&b).unwrap())
    }

    const OWN_API: Envelope<'static> = Envelope {
        model: Some("claude"),
        anthropic_version: None,
        stream: false,
    };

    fn hello(extra: Value) -> Value {
        let mut request =
            json!({"model": "alias", "messages": [{"role": "user", "content": "hi"}]});
        if let (Value::Object(request), Value::Object(extra)) = (&mut request, extra) {
            request.extend(extra);
        }
        request
    }

    #[test]
    fn vertex_and_bedrock_envelopes_move_the_model_and_version() {
        let vertex = Envelope {
            model: None,
            anthropic_version: Some("vertex-2023-10-16"),
            stream: true,
        };
        let got = body(hello(json!({})), vertex).unwrap();
        assert!(got.get("model").is_none());
        assert_eq!(got["anthropic_version"], "vertex-2023-10-16");
        assert_eq!(got["stream"], true);
        let own = body(hello(json!({})), OWN_API).unwrap();
        assert_eq!(own["model"], "claude");
        assert!(own.get("anthropic_version").is_none() && own.get("stream").is_none());
    }

    #[test]
    fn max_tokens_defaults_and_max_completion_tokens_wins() {
        assert_eq!(
            body(hello(json!({})), OWN_API).unwrap()["max_tokens"],
            DEFAULT_MAX_TOKENS
        );
        let both = hello(json!({"max_tokens": 10, "max_completion_tokens": 20}));
        assert_eq!(body(both, OWN_API).unwrap()["max_tokens"], 20);
    }

    #[test]
    fn a_temperature_above_one_is_refused_not_clamped() {
        assert_eq!(
            body(hello(json!({"temperature": 1.0})), OWN_API).unwrap()["temperature"],
            1.0
        );
        let refused = body(hello(json!({"temperature": 1.5})), OWN_API).unwrap_err();
        assert_eq!(refused.param.as_deref(), Some("temperature"));
        assert_eq!(refused.status.map(|s| s.as_u16()), Some(400));
    }

    #[test]
    fn tool_choice_maps_every_openai_mode() {
        let tools = json!([{"type": "function", "function": {"name": "w", "parameters": {}}}]);
        let choice = |extra: Value| {
            let mut request = hello(json!({"tools": tools}));
            if let (Value::Object(request), Value::Object(extra)) = (&mut request, extra) {
                request.extend(extra);
            }
            body(request, OWN_API).map(|b| b["tool_choice"].clone())
        };
        assert_eq!(choice(json!({})).unwrap(), Value::Null);
        assert_eq!(
            choice(json!({"tool_choice": "auto"})).unwrap(),
            json!({"type": "auto"})
        );
        assert_eq!(
            choice(json!({"tool_choice": "none"})).unwrap(),
            json!({"type": "none"})
        );
        assert_eq!(
            choice(json!({"tool_choice": "required", "parallel_tool_calls": false})).unwrap(),
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            choice(json!({"tool_choice": {"type": "function", "function": {"name": "w"}}}))
                .unwrap(),
            json!({"type": "tool", "name": "w"})
        );
        assert_eq!(
            choice(json!({"parallel_tool_calls": false})).unwrap(),
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        let unknown =
            choice(json!({"tool_choice": {"type": "function", "function": {"name": "x"}}}));
        assert_eq!(unknown.unwrap_err().param.as_deref(), Some("tool_choice"));
        let without_tools = body(hello(json!({"tool_choice": "required"})), OWN_API);
        assert_eq!(
            without_tools.unwrap_err().param.as_deref(),
            Some("tool_choice")
        );
        let schema = body(hello(json!({"tools": tools})), OWN_API).unwrap();
        assert_eq!(
            schema["tools"][0]["input_schema"],
            json!({"type": "object"})
        );
    }

    #[test]
    fn members_without_an_anthropic_equivalent_are_refused_by_name() {
        for member in ["seed", "logprobs", "frequency_penalty", "reasoning_effort"] {
            let refused = body(hello(json!({member: 1})), OWN_API).unwrap_err();
            assert_eq!(refused.param.as_deref(), Some(member));
        }
        let advisory = hello(json!({"user": "u1", "stream_options": {"include_usage": true}}));
        assert!(body(advisory, OWN_API).is_ok());
    }
}
