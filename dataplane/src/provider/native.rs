//! Answers passed through in the client's own API (Anthropic Messages to Anthropic, Responses to
//! OpenAI): the bytes go to the client as the provider sent them, and this module reads what the
//! gateway needs from them without changing them: the usage, whether an event carries content
//! (the streaming contract's first token), whether it is an error, which members hold generated
//! text, and whether a stream reached its last event.

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use serde::Deserialize;

use super::{CallError, CallErrorKind, CompletionDetails, PromptDetails, Usage};
use crate::{request::NativeApi, sse::DataLines};

/// A provider's answer in the client's own API.
pub struct NativeAnswer {
    pub api: NativeApi,
    pub body: NativeBody,
}

pub enum NativeBody {
    Complete {
        body: Bytes,
        usage: Option<Usage>,
    },
    /// The provider's SSE bytes, checked to end with the API's last event.
    Stream(BoxStream<'static, Result<Bytes, CallError>>),
}

/// What one streamed event is, for the first-content rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Content,
    Error,
    Preamble,
}

#[derive(Deserialize)]
struct Typed {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    content_block: Option<Block>,
    #[serde(default)]
    item: Option<Block>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(default, rename = "type")]
    kind: String,
}

/// Classifies one `data:` payload of a native stream.
pub fn classify(api: NativeApi, data: &[u8]) -> EventKind {
    let Ok(event) = serde_json::from_slice::<Typed>(data) else {
        return EventKind::Error;
    };
    match (api, event.kind.as_str()) {
        (_, "error") => EventKind::Error,
        (NativeApi::Responses, "response.failed" | "response.incomplete") => EventKind::Error,
        (NativeApi::Messages, "content_block_delta" | "message_stop") => EventKind::Content,
        // A tool call announces itself before its arguments stream.
        (NativeApi::Messages, "content_block_start") => {
            if event.content_block.is_some_and(|b| b.kind != "text") {
                EventKind::Content
            } else {
                EventKind::Preamble
            }
        }
        (
            NativeApi::Responses,
            "response.output_text.delta"
            | "response.function_call_arguments.delta"
            | "response.refusal.delta"
            | "response.completed",
        ) => EventKind::Content,
        (NativeApi::Responses, "response.output_item.added") => {
            if event.item.is_some_and(|i| i.kind == "function_call") {
                EventKind::Content
            } else {
                EventKind::Preamble
            }
        }
        _ => EventKind::Preamble,
    }
}

/// The event that ends a complete stream.
fn is_last(api: NativeApi, data: &[u8]) -> bool {
    let needle: &[u8] = match api {
        NativeApi::Messages => b"\"message_stop\"",
        NativeApi::Responses => b"\"response.completed\"",
    };
    memchr::memmem::find(data, needle).is_some()
}

/// Members whose string values are generated text, to count what a cut stream delivered.
pub fn generated_members(api: NativeApi) -> &'static [&'static [u8]] {
    match api {
        NativeApi::Messages => &[b"\"text\":\"", b"\"partial_json\":\"", b"\"thinking\":\""],
        NativeApi::Responses => &[b"\"delta\":\""],
    }
}

/// Anthropic's usage: cache reads and writes are outside `input_tokens`.
#[derive(Deserialize, Default)]
struct MessagesUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

/// The Responses API's usage.
#[derive(Deserialize, Default)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<Cached>,
    #[serde(default)]
    output_tokens_details: Option<Reasoning>,
}

#[derive(Deserialize, Default)]
struct Cached {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize, Default)]
struct Reasoning {
    #[serde(default)]
    reasoning_tokens: u64,
}

/// Folds the usage one Messages usage object reports into `usage` (message_start carries the
/// prompt, message_delta the output, and newer APIs repeat the prompt there).
fn fold_messages(usage: &mut Usage, reported: &MessagesUsage) {
    if let Some(input) = reported.input_tokens {
        let cached = reported.cache_read_input_tokens.unwrap_or(0);
        let written = reported.cache_creation_input_tokens.unwrap_or(0);
        usage.prompt_tokens = input + cached + written;
        usage.prompt_tokens_details = (cached > 0).then_some(PromptDetails {
            cached_tokens: cached,
        });
    }
    if let Some(output) = reported.output_tokens {
        usage.completion_tokens = output;
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
}

fn from_responses(reported: &ResponsesUsage) -> Usage {
    let cached = reported
        .input_tokens_details
        .as_ref()
        .map_or(0, |d| d.cached_tokens);
    let reasoning = reported
        .output_tokens_details
        .as_ref()
        .map_or(0, |d| d.reasoning_tokens);
    Usage {
        prompt_tokens: reported.input_tokens,
        completion_tokens: reported.output_tokens,
        total_tokens: reported.input_tokens + reported.output_tokens,
        prompt_tokens_details: (cached > 0).then_some(PromptDetails {
            cached_tokens: cached,
        }),
        completion_tokens_details: (reasoning > 0).then_some(CompletionDetails {
            reasoning_tokens: reasoning,
        }),
    }
}

/// The usage a complete native answer reports.
pub fn usage(api: NativeApi, body: &[u8]) -> Option<Usage> {
    match api {
        NativeApi::Messages => {
            #[derive(Deserialize)]
            struct Message {
                usage: MessagesUsage,
            }
            let message: Message = serde_json::from_slice(body).ok()?;
            let mut usage = Usage::default();
            fold_messages(&mut usage, &message.usage);
            Some(usage)
        }
        NativeApi::Responses => {
            #[derive(Deserialize)]
            struct Response {
                usage: Option<ResponsesUsage>,
            }
            let response: Response = serde_json::from_slice(body).ok()?;
            Some(from_responses(&response.usage?))
        }
    }
}

/// Folds the usage a streamed event reports (if any) into `usage`.
pub fn fold_event_usage(api: NativeApi, data: &[u8], usage: &mut Option<Usage>) {
    match api {
        NativeApi::Messages => {
            #[derive(Deserialize)]
            struct Event {
                #[serde(default)]
                usage: Option<MessagesUsage>,
                #[serde(default)]
                message: Option<Inner>,
            }
            #[derive(Deserialize)]
            struct Inner {
                #[serde(default)]
                usage: Option<MessagesUsage>,
            }
            let Ok(event) = serde_json::from_slice::<Event>(data) else {
                return;
            };
            for reported in [event.message.and_then(|m| m.usage), event.usage]
                .iter()
                .flatten()
            {
                fold_messages(usage.get_or_insert_with(Usage::default), reported);
            }
        }
        NativeApi::Responses => {
            #[derive(Deserialize)]
            struct Event {
                #[serde(default)]
                response: Option<Inner>,
            }
            #[derive(Deserialize)]
            struct Inner {
                #[serde(default)]
                usage: Option<ResponsesUsage>,
            }
            if let Ok(Event {
                response: Some(Inner {
                    usage: Some(reported),
                }),
            }) = serde_json::from_slice::<Event>(data)
            {
                *usage = Some(from_responses(&reported));
            }
        }
    }
}

/// Passes `upstream` on untouched and fails it when it ends before the API's last event (a cut
/// stream must never look complete).
pub fn require_end(
    upstream: BoxStream<'static, Result<Bytes, CallError>>,
    api: NativeApi,
    provider: &'static str,
) -> BoxStream<'static, Result<Bytes, CallError>> {
    struct Watch {
        lines: DataLines,
        ended: bool,
    }
    let watch = Watch {
        lines: DataLines::new(usize::MAX),
        ended: false,
    };
    futures_util::stream::unfold(Some((upstream, watch)), move |state| async move {
        let (mut upstream, mut watch) = state?;
        match upstream.next().await {
            Some(Ok(bytes)) => {
                let ended = &mut watch.ended;
                // Lines are not capped here: only the last event's name is looked for.
                let _ = watch
                    .lines
                    .push(&bytes, |data| *ended |= is_last(api, data));
                Some((Ok(bytes), Some((upstream, watch))))
            }
            Some(Err(error)) => Some((Err(error), None)),
            None if watch.ended => None,
            None => Some((
                Err(CallError::new(
                    CallErrorKind::Protocol,
                    format!("{provider}: the stream ended before its last event"),
                )),
                None,
            )),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_usage_counts_cache_reads_as_prompt_tokens() {
        let body = br#"{"usage":{"input_tokens":10,"output_tokens":4,"cache_read_input_tokens":90,"cache_creation_input_tokens":0}}"#;
        let usage = usage(NativeApi::Messages, body).unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (100, 4, 104)
        );
        assert_eq!(usage.cached_tokens(), 90);
    }

    #[test]
    fn streamed_messages_usage_folds_start_and_delta() {
        let mut usage = None;
        fold_event_usage(
            NativeApi::Messages,
            br#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#,
            &mut usage,
        );
        fold_event_usage(
            NativeApi::Messages,
            br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":30}}"#,
            &mut usage,
        );
        let usage = usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 30));
    }

    #[test]
    fn responses_usage_comes_from_the_completed_event() {
        let mut usage = None;
        fold_event_usage(
            NativeApi::Responses,
            br#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":2}}}}"#,
            &mut usage,
        );
        let usage = usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 3));
        assert_eq!(usage.completion_tokens_details.unwrap().reasoning_tokens, 2);
    }

    #[test]
    fn content_errors_and_preamble_are_told_apart() {
        use EventKind::*;
        for (api, data, kind) in [
            (
                NativeApi::Messages,
                r#"{"type":"message_start","message":{}}"#,
                Preamble,
            ),
            (NativeApi::Messages, r#"{"type":"ping"}"#, Preamble),
            (
                NativeApi::Messages,
                r#"{"type":"content_block_start","content_block":{"type":"text","text":""}}"#,
                Preamble,
            ),
            (
                NativeApi::Messages,
                r#"{"type":"content_block_start","content_block":{"type":"tool_use"}}"#,
                Content,
            ),
            (
                NativeApi::Messages,
                r#"{"type":"content_block_delta","delta":{}}"#,
                Content,
            ),
            (
                NativeApi::Messages,
                r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
                Error,
            ),
            (
                NativeApi::Responses,
                r#"{"type":"response.created"}"#,
                Preamble,
            ),
            (
                NativeApi::Responses,
                r#"{"type":"response.output_text.delta","delta":"hi"}"#,
                Content,
            ),
            (NativeApi::Responses, r#"{"type":"response.failed"}"#, Error),
            (NativeApi::Responses, "not json", Error),
        ] {
            assert_eq!(classify(api, data.as_bytes()), kind, "{data}");
        }
    }
}
