//! A request that arrived on an inbound API other than chat completions. The pipeline runs it as
//! the chat completion it translates to (routing, tags, limits, the cache and every provider's
//! translation work on that); the original is kept, so a provider that speaks the client's own
//! API gets it unchanged but for the model.

use http::HeaderMap;

use super::JsonRequest;

/// The inbound APIs besides OpenAI's chat completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeApi {
    /// Anthropic's Messages API (`POST /v1/messages`).
    Messages,
    /// OpenAI's Responses API (`POST /v1/responses`).
    Responses,
}

impl NativeApi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Responses => "responses",
        }
    }
}

/// The client's own request.
pub struct Native {
    pub api: NativeApi,
    pub body: JsonRequest,
    /// Headers a provider speaking the same API gets as sent (`anthropic-version`,
    /// `anthropic-beta`).
    pub headers: HeaderMap,
    /// The first part of the request the chat translation cannot carry (a document block, a
    /// built-in tool, a stored response to continue): a provider that does not speak the
    /// client's API refuses the request with it, one that does gets it all.
    pub untranslatable: Option<Untranslatable>,
}

/// Why a request can go only to a provider that speaks its API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Untranslatable {
    pub message: String,
    /// The request member it concerns.
    pub param: String,
}
