//! Typed scripted behaviour: what the fake does with the next request. Tests queue scripts; each
//! request takes the next one, and answers normally when the queue is empty.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One scripted answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Script {
    /// Answer normally.
    Ok,
    /// Answer normally after a delay (before the response head).
    Delay { ms: u64 },
    /// Answer with this status and an OpenAI error body (or `body` when given).
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        /// Sent as the `retry-after` header (seconds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
    /// Close the connection without answering.
    Reset,
    /// Hold the request (in flight) until the test releases it, then answer normally.
    Hold,
    /// Stream `chunks` SSE events, then break the connection (streaming requests only).
    CutStreamAfter { chunks: usize },
    /// Stream `chunks` SSE events, then an OpenAI error event, and close without `[DONE]`
    /// (streaming requests only).
    StreamErrorAfter { chunks: usize },
    /// Stream `chunks` SSE events, then go silent with the connection open (streaming only).
    StallAfter { chunks: usize },
    /// Stream the answer with `gap_ms` between events (streaming requests only).
    Paced { gap_ms: u64 },
    /// Answer 200 with a body that is not JSON.
    MalformedJson,
}

impl Script {
    /// A status answer with the standard OpenAI error body.
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            body: None,
            retry_after: None,
        }
    }
}
