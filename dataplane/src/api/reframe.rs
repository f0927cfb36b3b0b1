//! A relayed stream put into a front door's framing: each chunk reframed (translated, or passed
//! on as it is), a failure after the stream began as the API's own error event, and whatever the
//! framing owes at the end.

use bytes::Bytes;
use futures_util::StreamExt;

use serde::de::DeserializeOwned;

use crate::{
    error::ApiError,
    finish::Relay,
    server::{self, ResponseBody},
    sse::DataLines,
};

pub trait Reframe: Send + 'static {
    /// The client's bytes for one relayed chunk.
    fn chunk(&mut self, bytes: &[u8]) -> Vec<u8>;
    /// The stream failed after it began: the API's error event.
    fn error(&mut self, error: &ApiError) -> Vec<u8>;
    /// The stream ended: what is left to say.
    fn end(&mut self) -> Vec<u8>;
}

/// Passes a stream in the client's own API on as it is; `error` frames a failure.
pub struct AsIs(pub fn(&ApiError) -> Vec<u8>);

impl Reframe for AsIs {
    fn chunk(&mut self, bytes: &[u8]) -> Vec<u8> {
        bytes.to_vec()
    }

    fn error(&mut self, error: &ApiError) -> Vec<u8> {
        (self.0)(error)
    }

    fn end(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

/// The chat completion chunks that `bytes` completes, and whether `[DONE]` came, for a door that
/// translates the chat stream into its own events. A line over the cap is dropped from the
/// translation, never from the answer's end.
pub fn chat_chunks<T: DeserializeOwned>(lines: &mut DataLines, bytes: &[u8]) -> (Vec<T>, bool) {
    let mut chunks = Vec::new();
    let mut done = false;
    let _ = lines.push(bytes, |data| {
        if data == b"[DONE]" {
            done = true;
        } else if let Ok(chunk) = serde_json::from_slice::<T>(data) {
            chunks.push(chunk);
        }
    });
    (chunks, done)
}

pub fn stream_body(relay: Relay, reframe: impl Reframe) -> ResponseBody {
    let frames = futures_util::stream::unfold(Some((relay, reframe)), |state| async move {
        let (mut relay, mut reframe) = state?;
        // Empty outputs (nothing to say for a chunk, or at the end) are dropped by the body.
        match relay.next().await {
            Some(Ok(bytes)) => Some((Bytes::from(reframe.chunk(&bytes)), Some((relay, reframe)))),
            Some(Err(error)) => Some((Bytes::from(reframe.error(&error)), None)),
            None => Some((Bytes::from(reframe.end()), None)),
        }
    });
    server::streamed(frames)
}
