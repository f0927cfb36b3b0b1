//! The client's OpenAI request, typed for the adapters that translate it to another API. Only the
//! members a translation reads are named; the rest stay in `rest`, so an adapter can refuse what
//! it cannot carry instead of dropping it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CallError, Target};
use crate::request::EXTENSION_FIELD;

/// Members that only steer OpenAI's own product features (storage, billing tier, end-user
/// attribution) and change nothing in the answer: adapters may leave them out.
pub const ADVISORY: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "stream_options",
    "prompt_cache_key",
    "safety_identifier",
];

/// Message members that carry nothing a translated provider could use: a participant `name`,
/// and what an assistant turn echoes back from an earlier answer (a refusal, citations, other
/// providers' reasoning and round-trip fields).
const ADVISORY_MESSAGE: &[&str] = &[
    "name",
    "refusal",
    "annotations",
    "reasoning_content",
    "thinking_blocks",
    "provider_specific_fields",
];

/// A member whose value asks for what every provider does anyway (penalties of 0, no log
/// probabilities, text output): not a parameter the provider must understand.
fn is_no_op(key: &str, value: &Value) -> bool {
    match key {
        "frequency_penalty" | "presence_penalty" => value.as_f64() == Some(0.0),
        "logprobs" => value == &Value::Bool(false),
        "logit_bias" => value.as_object().is_some_and(Map::is_empty),
        "modalities" => value == &serde_json::json!(["text"]),
        _ => false,
    }
}

/// `POST /v1/chat/completions`, as far as translations need it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub model: Option<String>,
    /// Every other member, `null`s included.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl ChatRequest {
    /// Parses the client's body for `provider`.
    pub fn parse(target: &Target<'_>) -> Result<Self, CallError> {
        let mut request: Self = serde_json::from_slice(target.request.body())
            .map_err(|e| CallError::invalid_request(format!("the chat request: {e}")))?;
        request.rest.remove(EXTENSION_FIELD);
        request
            .rest
            .retain(|key, value| !value.is_null() && !is_no_op(key, value));
        Ok(request)
    }

    /// The output cap, whichever of OpenAI's two names carried it.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Refuses any member outside `supported` (and the advisory ones), and any message member a
    /// translation has no place for: a parameter a provider cannot honour is a 400 naming it,
    /// never silently dropped.
    pub fn only(&self, provider: &str, supported: &[&str]) -> Result<(), CallError> {
        for (index, message) in self.messages.iter().enumerate() {
            message.only(index, provider)?;
        }
        for key in self.rest.keys() {
            if !ADVISORY.contains(&key.as_str()) && !supported.contains(&key.as_str()) {
                return Err(CallError::unsupported(format!(
                    "`{key}` is not supported by provider {provider}"
                ))
                .with_param(key));
            }
        }
        if self.n.is_some_and(|n| n > 1) && !supported.contains(&"n") {
            return Err(CallError::unsupported(format!(
                "`n` > 1 is not supported by provider {provider}"
            ))
            .with_param("n"));
        }
        Ok(())
    }

    /// The tools, or none.
    pub fn tools(&self) -> &[Tool] {
        self.tools.as_deref().unwrap_or_default()
    }

    /// The stop sequences as a list.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(list)) => list.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

impl Role {
    /// `system` and `developer` both instruct the model.
    pub fn is_instruction(self) -> bool {
        matches!(self, Self::System | Self::Developer)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Message {
    /// Refuses a member of message `index` that is neither read by translations nor advisory,
    /// and part members other than `cache_control` (a caching hint).
    fn only(&self, index: usize, provider: &str) -> Result<(), CallError> {
        let unknown = self
            .rest
            .iter()
            .find(|(key, value)| !value.is_null() && !ADVISORY_MESSAGE.contains(&key.as_str()));
        if let Some((key, _)) = unknown {
            return Err(CallError::unsupported(format!(
                "messages[{index}].{key} is not supported by provider {provider}"
            ))
            .with_param(format!("messages[{index}].{key}")));
        }
        if let Some(Content::Parts(parts)) = &self.content
            && let Some(key) = parts
                .iter()
                .find_map(|p| p.rest.iter().find(|(_, v)| !v.is_null()).map(|(k, _)| k))
        {
            return Err(CallError::unsupported(format!(
                "`{key}` in a content part of messages[{index}] is not supported by provider \
                 {provider}"
            ))
            .with_param(format!("messages[{index}].content")));
        }
        Ok(())
    }

    /// The message's text: a string, or its text parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
        }
    }

    /// The content as parts (a string is one text part).
    pub fn parts(&self) -> Vec<Part> {
        match &self.content {
            None => Vec::new(),
            Some(Content::Text(text)) => vec![Part::text(text)],
            Some(Content::Parts(parts)) => parts.clone(),
        }
    }

    pub fn tool_calls(&self) -> &[ToolCall] {
        self.tool_calls.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One content part: `text` or `image_url` (other kinds are refused by the part's reader).
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub image_url: Option<ImageUrl>,
    /// Anthropic's prompt-caching marker (`{"type": "ephemeral"}`), which OpenAI-style clients
    /// put on parts: honoured where the provider caches on request, a hint elsewhere.
    #[serde(default)]
    pub cache_control: Option<Value>,
    /// Any other member, refused by `ChatRequest::only`.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Part {
    fn text(text: &str) -> Self {
        Self {
            kind: "text".to_owned(),
            text: Some(text.to_owned()),
            image_url: None,
            cache_control: None,
            rest: Map::new(),
        }
    }

    /// What the part holds, or a 400 naming a kind no adapter carries.
    pub fn read(&self, provider: &str) -> Result<PartRef<'_>, CallError> {
        match (self.kind.as_str(), &self.text, &self.image_url) {
            ("text", Some(text), _) => Ok(PartRef::Text(text)),
            ("image_url", _, Some(image)) => Ok(PartRef::Image(Image::parse(&image.url)?)),
            (kind, _, _) => Err(CallError::unsupported(format!(
                "content parts of type `{kind}` are not supported by provider {provider}"
            ))
            .with_param("messages")),
        }
    }
}

/// A content part, read.
pub enum PartRef<'a> {
    Text(&'a str),
    Image(Image<'a>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default)]
    pub detail: Option<String>,
}

/// An image input: inline data from a `data:` URL, or a URL the provider fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url(&'a str),
}

impl<'a> Image<'a> {
    pub fn parse(url: &'a str) -> Result<Self, CallError> {
        let Some(rest) = url.strip_prefix("data:") else {
            if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://")
            {
                return Ok(Self::Url(url));
            }
            return Err(CallError::invalid_request(
                "an image_url must be an http(s) URL or a base64 data: URL",
            )
            .with_param("messages"));
        };
        match rest.split_once(";base64,") {
            Some((media_type, data)) if !media_type.is_empty() => {
                Ok(Self::Base64 { media_type, data })
            }
            _ => Err(CallError::invalid_request(
                "a data: image URL must be `data:<media type>;base64,<data>`",
            )
            .with_param("messages")),
        }
    }

    /// The media type of a URL, guessed from its extension.
    pub fn guess_media_type(url: &str) -> &'static str {
        let path = url
            .split(['?', '#'])
            .next()
            .unwrap_or(url)
            .to_ascii_lowercase();
        if path.ends_with(".png") {
            "image/png"
        } else if path.ends_with(".gif") {
            "image/gif"
        } else if path.ends_with(".webp") {
            "image/webp"
        } else {
            "image/jpeg"
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

impl FunctionCall {
    /// The arguments as a JSON object: `""` is `{}`; anything else must be a JSON object.
    pub fn arguments_object(&self) -> Result<Value, CallError> {
        if self.arguments.trim().is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        match serde_json::from_str::<Value>(&self.arguments) {
            Ok(value @ Value::Object(_)) => Ok(value),
            _ => Err(CallError::invalid_request(format!(
                "the arguments of tool call `{}` are not a JSON object",
                self.name
            ))
            .with_param("messages")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

impl FunctionDef {
    /// The parameter schema, `{"type":"object"}` when the tool takes none.
    pub fn schema(&self) -> Value {
        self.parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named { function: NamedFunction },
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// `tool_choice`, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolMode<'a> {
    Auto,
    None,
    Required,
    Function(&'a str),
}

impl ChatRequest {
    /// The tool choice (`auto` when unset), or a 400 for an unknown mode.
    pub fn tool_mode(&self) -> Result<ToolMode<'_>, CallError> {
        match &self.tool_choice {
            None => Ok(ToolMode::Auto),
            Some(ToolChoice::Named { function }) => Ok(ToolMode::Function(&function.name)),
            Some(ToolChoice::Mode(mode)) => match mode.as_str() {
                "auto" => Ok(ToolMode::Auto),
                "none" => Ok(ToolMode::None),
                "required" => Ok(ToolMode::Required),
                other => Err(
                    CallError::invalid_request(format!("unknown tool_choice `{other}`"))
                        .with_param("tool_choice"),
                ),
            },
        }
    }

    /// `response_format`, read.
    pub fn output_format(&self) -> Result<OutputFormat<'_>, CallError> {
        match &self.response_format {
            None => Ok(OutputFormat::Text),
            Some(format) => match format.kind.as_str() {
                "text" => Ok(OutputFormat::Text),
                "json_object" => Ok(OutputFormat::JsonObject),
                "json_schema" => match &format.json_schema {
                    Some(schema) => Ok(OutputFormat::JsonSchema(schema)),
                    None => Err(CallError::invalid_request(
                        "response_format json_schema needs a `json_schema` member",
                    )
                    .with_param("response_format")),
                },
                other => Err(CallError::invalid_request(format!(
                    "unknown response_format type `{other}`"
                ))
                .with_param("response_format")),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchema>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchema {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

impl JsonSchema {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("response")
    }

    pub fn schema(&self) -> Value {
        self.schema
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object"}))
    }
}

/// What the answer's text must be.
#[derive(Debug, Clone, Copy)]
pub enum OutputFormat<'a> {
    Text,
    JsonObject,
    JsonSchema(&'a JsonSchema),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/embeddings`, as far as translations need it.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingsRequest {
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    /// Token arrays: only OpenAI-format providers take them.
    Tokens(Value),
}

impl EmbeddingsRequest {
    pub fn parse(target: &Target<'_>, provider: &str) -> Result<Self, CallError> {
        let mut request: Self = serde_json::from_slice(target.request.body())
            .map_err(|e| CallError::invalid_request(format!("the embeddings request: {e}")))?;
        request.rest.remove(EXTENSION_FIELD);
        request.rest.remove("model");
        request.rest.remove("user");
        request.rest.retain(|_, v| !v.is_null());
        if let Some(key) = request.rest.keys().next() {
            return Err(CallError::unsupported(format!(
                "`{key}` is not supported by provider {provider}"
            ))
            .with_param(key));
        }
        Ok(request)
    }

    /// The texts to embed, or a 400 for token arrays.
    pub fn texts(&self, provider: &str) -> Result<Vec<&str>, CallError> {
        match &self.input {
            EmbeddingInput::One(text) => Ok(vec![text.as_str()]),
            EmbeddingInput::Many(texts) => Ok(texts.iter().map(String::as_str).collect()),
            EmbeddingInput::Tokens(_) => Err(CallError::unsupported(format!(
                "token-array embedding input is not supported by provider {provider}; send text"
            ))
            .with_param("input")),
        }
    }

    /// Whether the client wants base64 vectors (the OpenAI SDKs ask for them by default).
    pub fn wants_base64(&self) -> bool {
        self.encoding_format.as_deref() == Some("base64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::JsonRequest;
    use bytes::Bytes;
    use modelgate_crds::compiled::CompiledDeployment;

    fn checked(body: serde_json::Value) -> Result<ChatRequest, CallError> {
        let request = JsonRequest::parse(Bytes::from(body.to_string())).unwrap();
        let deployment: CompiledDeployment = serde_json::from_value(serde_json::json!({
            "id": "ns/g/d", "name": "d", "provider": "anthropic", "model": "m",
            "weight": 1, "tags": [], "timeouts": {},
        }))
        .unwrap();
        let target = Target {
            endpoint: super::super::Endpoint::ChatCompletions,
            request: &request,
            native: None,
            stream: false,
            deployment: &deployment,
        };
        let chat = ChatRequest::parse(&target)?;
        chat.only("p", &[])?;
        Ok(chat)
    }

    #[test]
    fn values_that_ask_for_nothing_are_not_parameters() {
        let chat = checked(serde_json::json!({
            "messages": [{"role": "user", "content": "hi"}],
            "frequency_penalty": 0, "presence_penalty": 0.0, "logprobs": false,
            "logit_bias": {}, "modalities": ["text"], "user": "u-1",
        }))
        .unwrap();
        let left: Vec<&String> = chat.rest.keys().collect();
        assert_eq!(left, ["user"], "only the advisory member is left");
        let refused = checked(serde_json::json!({
            "messages": [{"role": "user", "content": "hi"}], "frequency_penalty": 0.5,
        }))
        .unwrap_err();
        assert_eq!(refused.param.as_deref(), Some("frequency_penalty"));
    }

    #[test]
    fn message_members_without_a_place_are_refused_by_name() {
        let echoed = serde_json::json!({"messages": [
            {"role": "user", "content": "hi", "name": "alice"},
            {"role": "assistant", "content": "yo", "refusal": null, "reasoning_content": "..."},
            {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]},
        ]});
        assert!(checked(echoed).is_ok());
        let legacy = serde_json::json!({"messages": [
            {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
        ]});
        let refused = checked(legacy).unwrap_err();
        assert_eq!(refused.param.as_deref(), Some("messages[0].function_call"));
        assert_eq!(
            refused.provider_code.as_deref(),
            Some(super::super::UNSUPPORTED)
        );
        let odd_part = serde_json::json!({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "x", "weight": 2}]},
        ]});
        assert_eq!(
            checked(odd_part).unwrap_err().param.as_deref(),
            Some("messages[0].content")
        );
    }
}
