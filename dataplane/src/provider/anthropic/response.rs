//! A complete `Message` answer as a `chat.completion`: text blocks joined into the content, each
//! `tool_use` block a tool call (in JSON mode, the `json_response` call's input is the content),
//! thinking left out of the content.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    json_mode::TOOL as JSON_TOOL,
    wire::{WireUsage, finish_reason},
};
use crate::provider::{
    CallError,
    output::{Completion, FinishReason, ToolCallOut},
    translated::{Translated, malformed},
};

#[derive(Deserialize)]
struct WireMessage<'a> {
    /// Blocks are read one by one: an unknown block type is skipped, never a failure.
    #[serde(borrow)]
    content: Vec<&'a RawValue>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct BlockType<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct TextBlock {
    text: String,
}

#[derive(Deserialize)]
struct ToolUseBlock<'a> {
    id: String,
    name: String,
    /// Kept as the provider wrote it, so the arguments keep the model's key order.
    #[serde(borrow)]
    input: &'a RawValue,
}

/// The OpenAI completion for a Messages answer `body`; `model` is what the completion names.
/// `json_mode`: the request forced the `json_response` tool, whose input is the answer.
pub(in crate::provider) fn completion(
    body: &[u8],
    model: &str,
    json_mode: bool,
    provider: &str,
) -> Result<Translated, CallError> {
    let unreadable =
        |e: serde_json::Error| malformed(provider, format!("an unreadable answer: {e}"));
    let message: WireMessage<'_> = serde_json::from_slice(body).map_err(unreadable)?;
    let mut completion = Completion::new(model);
    let choice = completion.choice();
    for block in message.content {
        let kind: BlockType<'_> = serde_json::from_str(block.get()).map_err(unreadable)?;
        match kind.kind.as_ref() {
            "text" => {
                let text: TextBlock = serde_json::from_str(block.get()).map_err(unreadable)?;
                choice.push_text(&text.text);
            }
            "tool_use" => {
                let call: ToolUseBlock<'_> =
                    serde_json::from_str(block.get()).map_err(unreadable)?;
                if json_mode && call.name == JSON_TOOL {
                    choice.push_text(call.input.get());
                    continue;
                }
                choice.tool_calls.push(ToolCallOut {
                    id: call.id,
                    name: call.name,
                    arguments: call.input.get().to_owned(),
                });
            }
            // Reasoning is the model's, not the answer: it never reaches `content`.
            "thinking" | "redacted_thinking" => {}
            other => {
                tracing::debug!(
                    block = other,
                    "anthropic: skipping a content block of unknown type"
                );
            }
        }
    }
    choice.finish_reason = message.stop_reason.as_deref().map(|reason| {
        match finish_reason(reason) {
            // The forced call is how the JSON answer ends, not a call for the client to make.
            FinishReason::ToolCalls if json_mode => FinishReason::Stop,
            other => other,
        }
    });
    completion.usage = message.usage.to_openai();
    Ok(Translated {
        body: completion.to_json(),
        usage: Some(completion.usage),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn translate(message: &str) -> Value {
        let translated = completion(message.as_bytes(), "claude", false, "anthropic").unwrap();
        serde_json::from_slice(&translated.body).unwrap()
    }

    #[test]
    fn thinking_stays_out_and_tool_arguments_keep_their_text() {
        let got = translate(
            r#"{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [
                  {"type": "thinking", "thinking": "secret plan", "signature": "sig"},
                  {"type": "text", "text": "Let me check. "},
                  {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
                  {"type": "text", "text": "One moment."},
                  {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"z":1,"a":2}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 5, "output_tokens": 7}}"#,
        );
        let message = &got["choices"][0]["message"];
        assert_eq!(message["content"], "Let me check. One moment.");
        assert_eq!(message["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            r#"{"z":1,"a":2}"#
        );
        assert_eq!(got["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(got["usage"]["total_tokens"], 12);
    }

    #[test]
    fn in_json_mode_the_forced_calls_input_is_the_content() {
        let message = r#"{"content": [
              {"type": "tool_use", "id": "toolu_1", "name": "json_response", "input": {"name":"Ada","age":36}}
            ], "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7}}"#;
        let translated = completion(message.as_bytes(), "claude", true, "anthropic").unwrap();
        let got: Value = serde_json::from_slice(&translated.body).unwrap();
        let choice = &got["choices"][0];
        assert_eq!(choice["message"]["content"], r#"{"name":"Ada","age":36}"#);
        assert!(choice["message"].get("tool_calls").is_none());
        assert_eq!(choice["finish_reason"], "stop");
        let cut = message.replace("\"tool_use\", \"usage\"", "\"max_tokens\", \"usage\"");
        let translated = completion(cut.as_bytes(), "claude", true, "anthropic").unwrap();
        let got: Value = serde_json::from_slice(&translated.body).unwrap();
        assert_eq!(got["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn a_body_that_is_not_a_message_is_a_protocol_error() {
        let Err(error) = completion(b"{\"type\":\"error\"}", "claude", false, "anthropic") else {
            panic!("an error body read as an answer");
        };
        assert_eq!(error.kind, crate::provider::CallErrorKind::Protocol);
    }
}
