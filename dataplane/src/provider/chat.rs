//! The client's OpenAI request, typed for the adapters that translate it to another API. Only the
//! members a translation reads are named; the rest stay in `rest`, so an adapter can refuse what
//! it cannot carry instead of dropping it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CallError, Target};
use crate::api::EXTENSION_FIELD;

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
        request.rest.retain(|_, v| !v.is_null());
        Ok(request)
    }

    /// The output cap, whichever of OpenAI's two names carried it.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Refuses any member outside `supported` (and the advisory ones): a parameter a provider
    /// cannot honour is a 400 naming it, never silently dropped.
    pub fn only(&self, provider: &str, supported: &[&str]) -> Result<(), CallError> {
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
}

impl Part {
    fn text(text: &str) -> Self {
        Self {
            kind: "text".to_owned(),
            text: Some(text.to_owned()),
            image_url: None,
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
