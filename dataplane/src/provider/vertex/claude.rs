//! Claude on Vertex AI: Anthropic's Messages body through `rawPredict` / `streamRawPredict`,
//! without `model` (it is in the URL) and with Vertex's `anthropic_version`. Answers are
//! Anthropic's, except where Vertex's own front end speaks: its refusals, and errors inside a
//! stream, come as a `google.rpc.Status` (`{"error": {"code", "message", "status"}}`, no
//! `type`), read by the Gemini dialect's error reader.

use bytes::Bytes;
use http::Request;

use super::super::google::{Publisher, VERTEX as NAME, model_url};
use crate::provider::{
    CallError, CallErrorKind, Endpoint, Target, anthropic,
    chat::ChatRequest,
    gemini,
    output::ChunkWriter,
    translated::{EventHandler, SseStream, StreamTranslator, Translated},
    transport,
};
use crate::request::Native;

/// The `anthropic_version` Claude takes on Vertex.
const CLAUDE_VERSION: &str = "vertex-2023-10-16";

pub(super) fn request(target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
    if target.endpoint != Endpoint::ChatCompletions {
        return Err(CallError::unsupported(format!(
            "Claude models on provider {NAME} serve chat completions only"
        ))
        .with_param("model"));
    }
    let chat = ChatRequest::parse(target)?;
    let envelope = anthropic::request::Envelope {
        model: None,
        anthropic_version: Some(CLAUDE_VERSION),
        stream: target.stream,
    };
    let body = anthropic::request::messages_body(&chat, envelope, NAME)?;
    let method = if target.stream {
        "streamRawPredict"
    } else {
        "rawPredict"
    };
    let url = model_url(
        target.deployment,
        Publisher::Anthropic,
        &target.deployment.model,
        method,
    )?;
    transport::with_body(transport::json_post(&url, target.stream), body)
}

/// A Messages client's request for Claude on Vertex: the client's body without `model` (it is in
/// the URL) and with Vertex's `anthropic_version`, and its `anthropic-beta` headers.
pub(super) fn native_request(
    target: &Target<'_>,
    native: &Native,
) -> Result<Request<Bytes>, CallError> {
    let mut body: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(native.body.body())
            .map_err(|e| CallError::unsupported(format!("the request body: {e}")))?;
    body.remove("model");
    body.remove(crate::request::EXTENSION_FIELD);
    body.insert("anthropic_version".into(), CLAUDE_VERSION.into());
    let method = if target.stream {
        "streamRawPredict"
    } else {
        "rawPredict"
    };
    let url = model_url(
        target.deployment,
        Publisher::Anthropic,
        &target.deployment.model,
        method,
    )?;
    let mut builder = transport::json_post(&url, target.stream);
    for beta in native.headers.get_all("anthropic-beta") {
        builder = builder.header("anthropic-beta", beta.clone());
    }
    let body = serde_json::to_vec(&body).unwrap_or_default();
    transport::with_body(builder, Bytes::from(body))
}

pub(super) fn response(target: &Target<'_>, body: &[u8]) -> Result<Translated, CallError> {
    let json_mode = anthropic::json_mode::requested(target);
    anthropic::response::completion(body, &target.deployment.model, json_mode, NAME)
}

pub(super) fn stream(target: &Target<'_>) -> Box<dyn StreamTranslator> {
    let events =
        anthropic::stream::MessagesStream::new(NAME, anthropic::json_mode::requested(target));
    Box::new(SseStream::new(
        ClaudeStream(events),
        &target.deployment.model,
        NAME,
    ))
}

/// Anthropic's stream events, and Vertex's own error objects among them.
struct ClaudeStream(anthropic::stream::MessagesStream);

impl EventHandler for ClaudeStream {
    fn event(
        &mut self,
        name: Option<&str>,
        data: &[u8],
        out: &mut ChunkWriter,
    ) -> Result<(), CallError> {
        self.0.event(name, data, out).map_err(|error| {
            // Only an event Anthropic's reader could not read is looked at again: every
            // Anthropic event (its `error` events too) has a `type`.
            match (error.kind, google_status(data)) {
                (CallErrorKind::Protocol, Some(status)) => gemini::error::in_stream(NAME, status),
                _ => error,
            }
        })
    }
}

/// The `google.rpc.Status` in a body without Anthropic's `type` member.
fn google_status(body: &[u8]) -> Option<gemini::error::RpcStatus> {
    if is_anthropic(body) {
        return None;
    }
    gemini::error::parse(body)
}

/// An Anthropic-shaped body: `{"type": ...}`.
fn is_anthropic(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        _kind: serde::de::IgnoredAny,
    }
    serde_json::from_slice::<Tagged>(body).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ErrorClass;

    fn run(sse: &str) -> (String, Result<(), CallError>) {
        let mut stream = SseStream::new(
            ClaudeStream(anthropic::stream::MessagesStream::new(NAME, false)),
            "claude-sonnet-4-5@20250929",
            NAME,
        );
        let mut out = Vec::new();
        let mut result = stream.feed(sse.as_bytes(), &mut out);
        if result.is_ok() {
            result = stream.finish(&mut out);
        }
        (String::from_utf8(out).unwrap(), result)
    }

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";

    #[test]
    fn a_google_error_in_the_stream_is_classified_by_its_status() {
        let sse = format!(
            "{START}data: {{\"error\": {{\"code\": 429, \"message\": \"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model\", \"status\": \"RESOURCE_EXHAUSTED\"}}}}\n\n"
        );
        let (out, result) = run(&sse);
        assert!(out.contains("\"content\":\"Hi\""), "{out}");
        let error = result.unwrap_err();
        assert_eq!(error.class(), ErrorClass::RateLimit, "{error:?}");
        let unavailable = format!(
            "{START}data: {{\"error\": {{\"code\": 503, \"message\": \"The service is unavailable.\", \"status\": \"UNAVAILABLE\"}}}}\n\n"
        );
        assert_eq!(
            run(&unavailable).1.unwrap_err().class(),
            ErrorClass::Overloaded
        );
    }

    #[test]
    fn anthropic_error_events_and_unreadable_events_keep_their_meaning() {
        let anthropic = format!(
            "{START}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
        );
        assert_eq!(
            run(&anthropic).1.unwrap_err().class(),
            ErrorClass::Overloaded
        );
        let garbage = format!("{START}data: {{\"neither\": 1}}\n\n");
        let error = run(&garbage).1.unwrap_err();
        assert_eq!(error.kind, CallErrorKind::Protocol);
        assert!(
            error.message.contains("unreadable stream event"),
            "{}",
            error.message
        );
    }
}
