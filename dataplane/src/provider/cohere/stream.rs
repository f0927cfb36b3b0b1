//! Cohere's named SSE events as OpenAI chunks:
//!
//! | Cohere event | OpenAI |
//! | --- | --- |
//! | `content-delta` of a text block | `content` delta (thinking blocks are left out) |
//! | `tool-call-start` | a tool call opens: id, name, `""` arguments (Cohere's tool index is mapped to OpenAI's own count) |
//! | `tool-call-delta` | an `arguments` fragment (`tool_calls` is one object here, not a list) |
//! | `tool-call-end` | `{}` when no argument arrived (a tool that takes none) |
//! | `message-end` | finish chunk, usage chunk, `[DONE]`; `ERROR`/`TIMEOUT` or an `error` fail the stream |
//! | `message-start`, `content-start`/`-end`, `tool-plan-delta`, `citation-*`, others | nothing |
//!
//! There is no `[DONE]`: a stream that closes before `message-end` fails.

use serde::Deserialize;

use super::{
    super::{
        CallError,
        output::ChunkWriter,
        translated::{EventHandler, malformed},
    },
    NAME,
    response::{UsageIn, finish_reason, generation_failed, usage},
};

/// One stream's state.
#[derive(Default)]
pub struct Events {
    /// Open tool calls: Cohere's index, OpenAI's index, and whether any argument text came.
    tool_calls: Vec<(u32, u32, bool)>,
    /// Indexes of thinking blocks, whose deltas are left out.
    thinking: Vec<u32>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    message: Option<DeltaMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct DeltaMessage {
    #[serde(default)]
    content: Option<ContentDelta>,
    #[serde(default)]
    tool_calls: Option<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ContentDelta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl EventHandler for Events {
    fn event(
        &mut self,
        name: Option<&str>,
        data: &[u8],
        out: &mut ChunkWriter,
    ) -> Result<(), CallError> {
        let event: Event = serde_json::from_slice(data)
            .map_err(|e| malformed(NAME, format!("unreadable stream event: {e}")))?;
        let index = event.index.unwrap_or(0);
        let message = event.delta.as_ref().and_then(|d| d.message.as_ref());
        match name.or(event.kind.as_deref()).unwrap_or_default() {
            "content-start" => {
                let content = message.and_then(|m| m.content.as_ref());
                if content.and_then(|c| c.kind.as_deref()) == Some("thinking") {
                    self.thinking.push(index);
                } else if let Some(text) = content.and_then(|c| c.text.as_deref()) {
                    out.text(text);
                }
            }
            "content-delta" if !self.thinking.contains(&index) => {
                if let Some(text) = message
                    .and_then(|m| m.content.as_ref())
                    .and_then(|c| c.text.as_deref())
                {
                    out.text(text);
                }
            }
            "tool-call-start" => {
                let call = message.and_then(|m| m.tool_calls.as_ref());
                let (Some(id), Some(function)) = (
                    call.and_then(|c| c.id.as_deref()),
                    call.and_then(|c| c.function.as_ref()),
                ) else {
                    return Err(malformed(NAME, "a tool-call-start without id or function"));
                };
                let arguments = function.arguments.as_deref().unwrap_or_default();
                let name = function.name.as_deref().unwrap_or_default();
                let openai = out.tool_call(id, name, arguments);
                self.tool_calls.push((index, openai, !arguments.is_empty()));
            }
            "tool-call-delta" => {
                let fragment = message
                    .and_then(|m| m.tool_calls.as_ref())
                    .and_then(|c| c.function.as_ref())
                    .and_then(|f| f.arguments.as_deref())
                    .unwrap_or_default();
                let call = self.open_call(index)?;
                call.2 |= !fragment.is_empty();
                let openai = call.1;
                out.tool_arguments(openai, fragment);
            }
            "tool-call-end" => {
                let call = self.open_call(index)?;
                if !call.2 {
                    call.2 = true;
                    let openai = call.1;
                    out.tool_arguments(openai, "{}");
                }
            }
            "message-end" => {
                let Some(delta) = event.delta else {
                    return Err(malformed(NAME, "a message-end without its delta"));
                };
                if delta.error.as_ref().is_some_and(|e| !e.is_null()) {
                    return Err(generation_failed("the stream reported an error"));
                }
                let reason = finish_reason(delta.finish_reason.as_deref().unwrap_or_default())?;
                if let Some(reported) = &delta.usage {
                    *out.usage_mut() = usage(reported);
                }
                out.finish(reason);
                out.end();
            }
            _ => {}
        }
        Ok(())
    }
}

impl Events {
    fn open_call(&mut self, index: u32) -> Result<&mut (u32, u32, bool), CallError> {
        self.tool_calls
            .iter_mut()
            .find(|(cohere, _, _)| *cohere == index)
            .ok_or_else(|| malformed(NAME, format!("a delta for tool call {index}, never opened")))
    }
}
