//! Provider adapters behind one trait and one registry: the only module that names a provider.
//! An adapter turns the client's OpenAI-shaped request into its provider's call and the answer
//! back into OpenAI's shape.

#[cfg(test)]
mod against_fake;
mod anthropic;
mod bedrock;
pub mod chat;
mod cohere;
#[cfg(test)]
mod conformance;
mod done_watch;
mod embedding_batches;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod gemini;
mod google;
mod google_auth;
mod http;
mod mock;
pub mod native;
mod openai;
mod openai_message;
pub mod output;
pub mod translated;
mod transport;
mod vertex;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{future::BoxFuture, stream::BoxStream};
use modelgate_crds::{ProviderKind, compiled::CompiledDeployment};

use crate::request::{Endpoint, JsonRequest, Native};

pub use error::{CallError, CallErrorKind, ErrorClass, UNSUPPORTED};
pub use http::{DEFAULT_CONNECT_TIMEOUT, HttpClient, HttpClients};

/// Time limits of one attempt.
#[derive(Clone, Copy, Debug)]
pub struct AttemptTimeouts {
    /// Until the response head (non-streaming: the whole answer's head) arrives.
    pub first_byte: Duration,
    /// Longest gap between two body chunks.
    pub idle: Duration,
    /// Time allowed to open a connection (TCP and TLS).
    pub connect: Duration,
}

/// One call to one deployment.
pub struct Call<'a> {
    pub endpoint: Endpoint,
    pub request: &'a JsonRequest,
    /// The client's own request when it spoke another API (`request` is its translation).
    pub native: Option<&'a Native>,
    pub stream: bool,
    pub deployment: &'a CompiledDeployment,
    /// The pooled client whose connect timeout is the deployment's.
    pub http: HttpClient,
    pub timeouts: AttemptTimeouts,
    /// The attempt's span, sent to the provider as `traceparent` (when traces are exported).
    pub trace: Option<crate::trace::SpanIds>,
}

impl Call<'_> {
    /// What the call asks for, without the means to send it: what translations read.
    pub fn target(&self) -> Target<'_> {
        Target {
            endpoint: self.endpoint,
            request: self.request,
            native: self.native,
            stream: self.stream,
            deployment: self.deployment,
        }
    }
}

/// The pure part of a call: the client's request and the deployment it goes to.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub endpoint: Endpoint,
    pub request: &'a JsonRequest,
    pub native: Option<&'a Native>,
    pub stream: bool,
    pub deployment: &'a CompiledDeployment,
}

/// Token counts as the provider reported them, in OpenAI's accounting: cached prompt tokens are
/// part of `prompt_tokens`, reasoning tokens part of `completion_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "count")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
}

/// A token count as providers write it: an integer, but `null`, a float or a negative number
/// must not turn a good answer into a failed one (`null` and negatives are 0, floats round,
/// anything past `u64` saturates).
fn count<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value: Option<serde_json::Number> = serde::Deserialize::deserialize(deserializer)?;
    Ok(value.map_or(0, |n| {
        n.as_u64()
            .or_else(|| n.as_i64().map(|_| 0))
            .unwrap_or_else(|| n.as_f64().map_or(0, |f| f.max(0.0).round() as u64))
    }))
}

impl Usage {
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromptDetails {
    #[serde(default, deserialize_with = "count")]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletionDetails {
    #[serde(default, deserialize_with = "count")]
    pub reasoning_tokens: u64,
}

/// A successful provider answer, already in OpenAI's wire format.
pub enum UpstreamBody {
    /// A complete JSON body (known to be valid JSON) and the usage it reports.
    Complete { body: Bytes, usage: Option<Usage> },
    /// An OpenAI-style SSE byte stream (`data: {...}\n\n` ... `data: [DONE]\n\n`).
    Stream(BoxStream<'static, Result<Bytes, CallError>>),
    /// An answer in the client's own API, from a provider that speaks it.
    Native(native::NativeAnswer),
}

/// A provider API.
pub trait Provider: Send + Sync {
    /// Performs the call. A non-2xx answer is an `Err` carrying status and Retry-After.
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<UpstreamBody, CallError>>;
}

use translated::{Dialect, Translating};

/// OpenAI itself and every OpenAI-compatible server speak the same wire format.
static OPENAI: Translating<openai::OpenAi> = Translating(openai::OpenAi(openai::Flavor::OpenAi));
static AZURE: Translating<openai::OpenAi> = Translating(openai::OpenAi(openai::Flavor::Azure));
static ANTHROPIC: Translating<anthropic::Anthropic> = Translating(anthropic::Anthropic);
static BEDROCK: Translating<bedrock::Bedrock> = Translating(bedrock::Bedrock);
static GEMINI: Translating<gemini::Gemini> = Translating(gemini::Gemini(gemini::Flavor::Gemini));
static VERTEX: Translating<vertex::Vertex> = Translating(vertex::Vertex);
static MISTRAL: Translating<openai::OpenAi> = Translating(openai::OpenAi(openai::Flavor::Mistral));
static DEEPSEEK: Translating<openai::OpenAi> =
    Translating(openai::OpenAi(openai::Flavor::Deepseek));
static COHERE: Translating<cohere::Cohere> = Translating(cohere::Cohere);
static MOCK: mock::Mock = mock::Mock;

/// The adapter for `kind`: every provider has one.
pub fn registry(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::Mock => &MOCK,
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => &OPENAI,
        ProviderKind::Azure => &AZURE,
        ProviderKind::Anthropic => &ANTHROPIC,
        ProviderKind::Bedrock => &BEDROCK,
        ProviderKind::Gemini => &GEMINI,
        ProviderKind::Vertex => &VERTEX,
        ProviderKind::Mistral => &MISTRAL,
        ProviderKind::Deepseek => &DEEPSEEK,
        ProviderKind::Cohere => &COHERE,
    }
}

/// The wire format of `kind` (every provider but the mock has one).
pub fn dialect(kind: ProviderKind) -> Option<&'static dyn Dialect> {
    match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => Some(&OPENAI.0),
        ProviderKind::Azure => Some(&AZURE.0),
        ProviderKind::Anthropic => Some(&ANTHROPIC.0),
        ProviderKind::Bedrock => Some(&BEDROCK.0),
        ProviderKind::Gemini => Some(&GEMINI.0),
        ProviderKind::Vertex => Some(&VERTEX.0),
        ProviderKind::Mistral => Some(&MISTRAL.0),
        ProviderKind::Deepseek => Some(&DEEPSEEK.0),
        ProviderKind::Cohere => Some(&COHERE.0),
        ProviderKind::Mock => None,
    }
}

/// Binary event-stream frames for the conformance fixtures of event-stream providers.
#[cfg(test)]
fn event_frames(events: &[serde_json::Value]) -> Vec<u8> {
    bedrock::event_frames(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_token_counts_never_fail_an_answer() {
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens": 12.6, "completion_tokens": null, "total_tokens": -3,
                "prompt_tokens_details": {"cached_tokens": null},
                "completion_tokens_details": {"reasoning_tokens": 1e30}}"#,
        )
        .unwrap();
        assert_eq!(usage.prompt_tokens, 13);
        assert_eq!(usage.completion_tokens, 0);
        assert_eq!(usage.total_tokens, 0);
        assert_eq!(usage.cached_tokens(), 0);
        assert_eq!(
            usage.completion_tokens_details.map(|d| d.reasoning_tokens),
            Some(u64::MAX)
        );
    }
}
