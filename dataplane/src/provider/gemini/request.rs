//! The client's OpenAI chat request as a Gemini `GenerateContentRequest`: system and developer
//! messages hoisted into `systemInstruction`, the rest as alternating `user`/`model` contents
//! (tool results in the user turn right after the calls, named from those calls), tools as
//! function declarations, and the sampling settings as `generationConfig`.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Flavor, tool_ids};
use crate::provider::{
    CallError,
    chat::{
        ChatRequest, Content as ChatContent, Image, Message, OutputFormat, PartRef, Role, ToolMode,
    },
};

/// Members beyond the ones `ChatRequest` names that Gemini carries (`n` as `candidateCount`).
const SUPPORTED: &[&str] = &["n", "seed", "presence_penalty", "frequency_penalty"];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tools<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(flatten)]
    data: PartData<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

impl<'a> Part<'a> {
    fn new(data: PartData<'a>) -> Self {
        Self {
            data,
            thought_signature: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum PartData<'a> {
    Text(&'a str),
    InlineData(Blob<'a>),
    FileData(FileData<'a>),
    FunctionCall(FunctionCall<'a>),
    FunctionResponse(FunctionResponse<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    mime_type: &'static str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Serialize)]
struct FunctionResponse<'a> {
    name: &'a str,
    response: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tools<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

/// The schema goes as `parametersJsonSchema`: plain JSON Schema, sent as the client wrote it,
/// instead of a lossy conversion to the OpenAPI subset `parameters` takes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_empty()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
    }
}

/// The Gemini request for `chat`, or a 400 naming what Gemini cannot carry.
pub fn generate_content<'a>(
    chat: &'a ChatRequest,
    flavor: Flavor,
    stream: bool,
) -> Result<GenerateContentRequest<'a>, CallError> {
    let provider = flavor.name();
    chat.only(provider, SUPPORTED)?;
    let candidates = chat.n.filter(|&n| n > 1);
    if stream && candidates.is_some() {
        return Err(CallError::unsupported(format!(
            "`n` > 1 is not supported by provider {provider} when streaming"
        ))
        .with_param("n"));
    }
    let history = History::of(&chat.messages, flavor)?;
    let tools = tools(chat, provider)?;
    Ok(GenerateContentRequest {
        contents: history.contents,
        system_instruction: (!history.system.is_empty()).then_some(SystemInstruction {
            parts: history.system,
        }),
        tool_config: tool_config(chat)?,
        tools,
        generation_config: generation_config(chat, candidates)?,
    })
}

/// The conversation, turned into Gemini turns in one pass.
#[derive(Default)]
struct History<'a> {
    contents: Vec<Content<'a>>,
    system: Vec<Part<'a>>,
    /// Every tool call made so far: OpenAI id → function name (tool messages carry only the id).
    calls: HashMap<&'a str, &'a str>,
    /// Calls of the latest assistant turn not answered yet.
    pending: Vec<&'a str>,
}

impl<'a> History<'a> {
    fn of(messages: &'a [Message], flavor: Flavor) -> Result<Self, CallError> {
        let mut history = Self::default();
        for message in messages {
            history.message(message, flavor)?;
        }
        history.check_answered()?;
        if history.contents.is_empty() {
            return Err(CallError::invalid_request(format!(
                "provider {} needs at least one user or assistant message",
                flavor.name()
            ))
            .with_param("messages"));
        }
        Ok(history)
    }

    fn message(&mut self, message: &'a Message, flavor: Flavor) -> Result<(), CallError> {
        let provider = flavor.name();
        match message.role {
            Role::System | Role::Developer => {
                for part in parts(message, provider)? {
                    match part {
                        PartRef::Text("") => {}
                        PartRef::Text(text) => self.system.push(Part::new(PartData::Text(text))),
                        PartRef::Image(_) => {
                            return Err(CallError::unsupported(format!(
                                "images in system messages are not supported by provider {provider}"
                            ))
                            .with_param("messages"));
                        }
                    }
                }
            }
            Role::User => {
                self.check_answered()?;
                let mut out = Vec::new();
                for part in parts(message, provider)? {
                    match part {
                        PartRef::Text("") => {}
                        PartRef::Text(text) => out.push(Part::new(PartData::Text(text))),
                        PartRef::Image(image) => out.push(Part::new(image_part(image, flavor)?)),
                    }
                }
                self.push("user", out);
            }
            Role::Assistant => {
                self.check_answered()?;
                self.assistant(message, provider)?;
            }
            Role::Tool => self.tool_result(message, provider)?,
            Role::Function => {
                return Err(CallError::unsupported(format!(
                    "legacy `function` messages are not supported by provider {provider}; use tool messages"
                ))
                .with_param("messages"));
            }
        }
        Ok(())
    }

    fn assistant(&mut self, message: &'a Message, provider: &str) -> Result<(), CallError> {
        let mut out = Vec::new();
        for part in parts(message, provider)? {
            match part {
                PartRef::Text("") => {}
                PartRef::Text(text) => out.push(Part::new(PartData::Text(text))),
                PartRef::Image(_) => {
                    return Err(CallError::unsupported(format!(
                        "images in assistant messages are not supported by provider {provider}"
                    ))
                    .with_param("messages"));
                }
            }
        }
        let first_call = out.len();
        for call in message.tool_calls() {
            let id = tool_ids::decode(&call.id);
            out.push(Part {
                data: PartData::FunctionCall(FunctionCall {
                    name: &call.function.name,
                    args: call.function.arguments_object()?,
                    id: id.gemini_id,
                }),
                thought_signature: id.signature,
            });
            self.calls.insert(&call.id, &call.function.name);
            self.pending.push(&call.id);
        }
        // A thinking model wants the signature of the turn's first call back; when the client's
        // history has none (another model wrote it), Google's stand-in skips the check.
        let calls = &mut out[first_call..];
        if !calls.is_empty() && calls.iter().all(|p| p.thought_signature.is_none()) {
            calls[0].thought_signature = Some(tool_ids::SKIP_SIGNATURE.to_owned());
        }
        self.push("model", out);
        Ok(())
    }

    fn tool_result(&mut self, message: &'a Message, provider: &str) -> Result<(), CallError> {
        let id = message.tool_call_id.as_deref().ok_or_else(|| {
            CallError::invalid_request("a tool message needs a `tool_call_id`")
                .with_param("messages")
        })?;
        let name = self.calls.get(id).copied().ok_or_else(|| {
            CallError::invalid_request(format!(
                "the tool message for `{id}` answers no tool call of an earlier assistant message"
            ))
            .with_param("messages")
        })?;
        self.pending.retain(|pending| *pending != id);
        let mut text = String::new();
        for part in parts(message, provider)? {
            match part {
                PartRef::Text(part) => text.push_str(part),
                PartRef::Image(_) => {
                    return Err(CallError::unsupported(format!(
                        "images in tool messages are not supported by provider {provider}"
                    ))
                    .with_param("messages"));
                }
            }
        }
        let part = PartData::FunctionResponse(FunctionResponse {
            name,
            response: tool_response(text),
            id: tool_ids::decode(id).gemini_id,
        });
        self.push("user", vec![Part::new(part)]);
        Ok(())
    }

    /// Gemini wants every call of a turn answered in the next turn.
    fn check_answered(&self) -> Result<(), CallError> {
        match self.pending.first() {
            None => Ok(()),
            Some(id) => Err(CallError::invalid_request(format!(
                "tool call `{id}` has no tool message answering it before the next turn"
            ))
            .with_param("messages")),
        }
    }

    /// Appends a turn, merged into the previous one when the role repeats (Gemini's turns
    /// alternate); a turn with nothing in it is left out.
    fn push(&mut self, role: &'static str, parts: Vec<Part<'a>>) {
        if parts.is_empty() {
            return;
        }
        match self.contents.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => self.contents.push(Content { role, parts }),
        }
    }
}

/// A message's content parts, read.
fn parts<'a>(message: &'a Message, provider: &str) -> Result<Vec<PartRef<'a>>, CallError> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(ChatContent::Text(text)) => Ok(vec![PartRef::Text(text)]),
        Some(ChatContent::Parts(parts)) => parts.iter().map(|p| p.read(provider)).collect(),
    }
}

/// A data: URL is sent inline. On Vertex an http(s) or gs:// URL is a file reference Vertex
/// fetches; the Gemini API fetches no URLs (only its own Files API's), and the gateway downloads
/// nothing, so there a URL is a 400.
fn image_part(image: Image<'_>, flavor: Flavor) -> Result<PartData<'_>, CallError> {
    match image {
        Image::Base64 { media_type, data } => Ok(PartData::InlineData(Blob {
            mime_type: media_type,
            data,
        })),
        Image::Url(_) if flavor == Flavor::Gemini => Err(CallError::unsupported(
            "image URLs are not supported by provider gemini (the Gemini API does not fetch \
             them): send the image as a base64 data: URL, or use provider vertex",
        )
        .with_param("messages")),
        Image::Url(url) => Ok(PartData::FileData(FileData {
            mime_type: Image::guess_media_type(url),
            file_uri: url,
        })),
    }
}

/// `functionResponse.response` must be an object: a tool's JSON object is sent as is, any other
/// text wrapped as `{"content": text}`.
fn tool_response(text: String) -> Value {
    if let Ok(object @ Value::Object(_)) = serde_json::from_str::<Value>(&text) {
        return object;
    }
    let mut wrapped = Map::new();
    wrapped.insert("content".to_owned(), Value::String(text));
    Value::Object(wrapped)
}

fn tools<'a>(chat: &'a ChatRequest, provider: &str) -> Result<Vec<Tools<'a>>, CallError> {
    let tools = chat.tools();
    if tools.is_empty() {
        return Ok(Vec::new());
    }
    if chat.parallel_tool_calls == Some(false) {
        return Err(CallError::unsupported(format!(
            "`parallel_tool_calls: false` is not supported by provider {provider}: Gemini has no switch to make one call at a time"
        ))
        .with_param("parallel_tool_calls"));
    }
    let mut declarations = Vec::with_capacity(tools.len());
    for tool in tools {
        if tool.kind != "function" {
            return Err(CallError::unsupported(format!(
                "tools of type `{}` are not supported by provider {provider}",
                tool.kind
            ))
            .with_param("tools"));
        }
        let name = tool.function.name.as_str();
        if !is_valid_function_name(name) {
            return Err(CallError::invalid_request(format!(
                "tool name `{name}` is not valid for provider {provider}: it must start with a letter or `_` and hold at most 128 of a-z, A-Z, 0-9, `_`, `.`, `:`, `-`"
            ))
            .with_param("tools"));
        }
        declarations.push(FunctionDeclaration {
            name,
            description: tool.function.description.as_deref(),
            parameters_json_schema: tool.function.parameters.as_ref(),
        });
    }
    Ok(vec![Tools {
        function_declarations: declarations,
    }])
}

fn is_valid_function_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn tool_config(chat: &ChatRequest) -> Result<Option<ToolConfig<'_>>, CallError> {
    let has_tools = !chat.tools().is_empty();
    let config = |mode, allowed| {
        Some(ToolConfig {
            function_calling_config: FunctionCallingConfig {
                mode,
                allowed_function_names: allowed,
            },
        })
    };
    match chat.tool_mode()? {
        // AUTO is Gemini's default.
        ToolMode::Auto => Ok(None),
        ToolMode::None if has_tools => Ok(config("NONE", None)),
        ToolMode::None => Ok(None),
        ToolMode::Required if has_tools => Ok(config("ANY", None)),
        ToolMode::Function(name) if chat.tools().iter().any(|t| t.function.name == name) => {
            Ok(config("ANY", Some([name])))
        }
        ToolMode::Required => Err(CallError::invalid_request(
            "tool_choice `required` needs at least one tool in `tools`",
        )
        .with_param("tool_choice")),
        ToolMode::Function(name) => Err(CallError::invalid_request(format!(
            "tool_choice names `{name}`, which is not in `tools`"
        ))
        .with_param("tool_choice")),
    }
}

fn generation_config(
    chat: &ChatRequest,
    candidates: Option<u32>,
) -> Result<GenerationConfig<'_>, CallError> {
    let (response_mime_type, response_json_schema) = match chat.output_format()? {
        OutputFormat::Text => (None, None),
        OutputFormat::JsonObject => (Some("application/json"), None),
        OutputFormat::JsonSchema(schema) => (Some("application/json"), Some(schema.schema())),
    };
    Ok(GenerationConfig {
        temperature: chat.temperature,
        top_p: chat.top_p,
        max_output_tokens: chat.max_output_tokens(),
        stop_sequences: chat.stop_sequences(),
        candidate_count: candidates,
        seed: chat.rest.get("seed"),
        presence_penalty: chat.rest.get("presence_penalty"),
        frequency_penalty: chat.rest.get("frequency_penalty"),
        response_mime_type,
        response_json_schema,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn translate(request: Value, flavor: Flavor, stream: bool) -> Result<Value, CallError> {
        let chat: ChatRequest = serde_json::from_value(request).unwrap();
        generate_content(&chat, flavor, stream).map(|r| serde_json::to_value(r).unwrap())
    }

    #[test]
    fn tool_results_are_named_from_their_calls_and_share_one_turn_with_the_next_user_text() {
        let signed = tool_ids::encode(None, Some("c2lnbmF0dXJl"));
        let body = translate(
            json!({"messages": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": signed, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "fc-2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "fc-2", "content": "{\"time\":\"12:00\"}"},
                {"role": "tool", "tool_call_id": signed, "content": "21C"},
                {"role": "user", "content": "thanks"}
            ]}),
            Flavor::Gemini,
            false,
        )
        .unwrap();
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
                    {"functionCall": {"name": "get_time", "args": {}, "id": "fc-2"}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_time", "response": {"time": "12:00"}, "id": "fc-2"}},
                    {"functionResponse": {"name": "get_weather", "response": {"content": "21C"}}},
                    {"text": "thanks"}
                ]}
            ])
        );
    }

    #[test]
    fn unanswered_and_unknown_tool_calls_are_refused_before_sending() {
        let unanswered = translate(
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "user", "content": "well?"}
            ]}),
            Flavor::Gemini,
            false,
        )
        .unwrap_err();
        assert!(
            unanswered.message.contains("`a` has no tool message"),
            "{}",
            unanswered.message
        );
        let unknown = translate(
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "zzz", "content": "x"}]}),
            Flavor::Gemini,
            false,
        )
        .unwrap_err();
        assert!(
            unknown.message.contains("answers no tool call"),
            "{}",
            unknown.message
        );
    }

    #[test]
    fn history_without_signatures_gets_the_documented_stand_in_on_the_first_call_only() {
        let body = translate(
            json!({"messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": "calling", "tool_calls": [
                    {"id": "call_aaaaaaaaaaaaaaaaaaaaaaaa", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "call_bbbbbbbbbbbbbbbbbbbbbbbb", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_aaaaaaaaaaaaaaaaaaaaaaaa", "content": "1"},
                {"role": "tool", "tool_call_id": "call_bbbbbbbbbbbbbbbbbbbbbbbb", "content": "2"}
            ]}),
            Flavor::Vertex,
            false,
        )
        .unwrap();
        let model = &body["contents"][1]["parts"];
        assert_eq!(model[0], json!({"text": "calling"}));
        assert_eq!(model[1]["thoughtSignature"], tool_ids::SKIP_SIGNATURE);
        assert_eq!(model[1]["functionCall"], json!({"name": "f", "args": {}}));
        assert!(model[2].get("thoughtSignature").is_none());
    }

    #[test]
    fn function_names_follow_geminis_rules() {
        for good in ["get_weather", "_x", "a.b:c-d", &"a".repeat(128)] {
            assert!(is_valid_function_name(good), "{good}");
        }
        for bad in ["", "1abc", "-x", "a b", "a/b", &"a".repeat(129)] {
            assert!(!is_valid_function_name(bad), "{bad}");
        }
    }

    #[test]
    fn several_candidates_cannot_be_streamed() {
        let request = json!({"messages": [{"role": "user", "content": "hi"}], "n": 2});
        let error = translate(request.clone(), Flavor::Gemini, true).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("n"));
        let body = translate(request, Flavor::Gemini, false).unwrap();
        assert_eq!(body["generationConfig"], json!({"candidateCount": 2}));
    }

    #[test]
    fn image_urls_go_to_vertex_only() {
        for url in [
            "https://example.com/cat.png",
            "http://example.com/cat.png",
            "gs://b/cat.png",
        ] {
            let request = json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}]});
            let refused = translate(request.clone(), Flavor::Gemini, false).unwrap_err();
            assert_eq!(
                refused.provider_code.as_deref(),
                Some(crate::provider::UNSUPPORTED),
                "{url}"
            );
            let body = translate(request, Flavor::Vertex, false).unwrap();
            assert_eq!(body["contents"][0]["parts"][0]["fileData"]["fileUri"], url);
        }
    }
}
