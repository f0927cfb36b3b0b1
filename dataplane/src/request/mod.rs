//! The parsed request: what a front door hands the pipeline, a leaf every stage may use. The
//! body is kept as received (see [`JsonRequest`]); only the members the gateway reads are
//! deserialized, and modelgate's own extension fields are read here and stripped on forwarding.

mod json;
mod native;
mod options;

pub use json::{EXTENSION_FIELD, JsonRequest};
pub use native::{Native, NativeApi, Untranslatable};
pub use options::{CACHE_HEADER, Options};

/// The API operations the gateway serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
    ImageGenerations,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Embeddings => "embeddings",
            Self::ImageGenerations => "images_generations",
        }
    }

    /// Path below an OpenAI-style base URL.
    pub fn openai_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Embeddings => "/embeddings",
            Self::ImageGenerations => "/images/generations",
        }
    }

    /// The body member that holds the prompt, for the token estimate.
    fn prompt_member(self) -> &'static str {
        match self {
            Self::ChatCompletions => "messages",
            Self::Embeddings => "input",
            Self::ImageGenerations => "prompt",
        }
    }
}

/// One inference request, parsed.
pub struct Parsed {
    pub endpoint: Endpoint,
    pub body: JsonRequest,
    /// The model name the client asked for.
    pub model: String,
    pub stream: bool,
    /// Whether a streaming client asked for the usage chunk (`stream_options.include_usage`);
    /// the gateway always asks the provider for it.
    pub client_wants_usage: bool,
    /// About four bytes of JSON per token: good enough to rank deployments and reserve budgets.
    pub prompt_tokens: u64,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// modelgate's own fields, from headers and the body extension.
    pub options: Options,
    /// The client's own request, when it spoke another API than chat completions (`body` is
    /// then its translation).
    pub native: Option<Native>,
}

impl Parsed {
    /// Parses an OpenAI-shaped body for `endpoint`, with the modelgate headers of its request.
    pub fn openai(
        endpoint: Endpoint,
        body: bytes::Bytes,
        headers: &http::HeaderMap,
    ) -> Result<Self, crate::error::ApiError> {
        let body = JsonRequest::parse(body)?;
        let model: String = body.field("model")?.ok_or_else(|| {
            crate::error::ApiError::invalid_request("`model` is required.").with_param("model")
        })?;
        let options = Options::read(headers, &body)?;
        let stream =
            endpoint == Endpoint::ChatCompletions && body.field::<bool>("stream")?.unwrap_or(false);
        let client_wants_usage = stream
            && body
                .field::<serde_json::Value>("stream_options")?
                .is_some_and(|o| o.get("include_usage") == Some(&serde_json::Value::Bool(true)));
        let max_tokens = body
            .field::<u64>("max_completion_tokens")?
            .or(body.field::<u64>("max_tokens")?);
        let prompt_tokens = body
            .raw(endpoint.prompt_member())
            .map_or(0, |raw| raw.len() as u64 / 4);
        Ok(Self {
            endpoint,
            body,
            model,
            stream,
            client_wants_usage,
            prompt_tokens,
            max_tokens,
            options,
            native: None,
        })
    }

    /// A request that arrived on `native.api`, run as the chat completion `chat` it translates
    /// to. The modelgate extension and headers are read from the client's own body.
    pub fn translated(
        native: Native,
        chat: bytes::Bytes,
        headers: &http::HeaderMap,
    ) -> Result<Self, crate::error::ApiError> {
        let options = Options::read(headers, &native.body)?;
        let mut parsed = Self::openai(Endpoint::ChatCompletions, chat, &http::HeaderMap::new())?;
        parsed.options = options;
        // The client's body, not its translation, is what the prompt estimate measures.
        parsed.prompt_tokens = native.body.body().len() as u64 / 4;
        parsed.native = Some(native);
        Ok(parsed)
    }
}
