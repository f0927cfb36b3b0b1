//! A Converse answer as a `chat.completion`, and what streams share with it: the stop reasons
//! and the token usage.

use serde::Deserialize;
use serde_json::Value;

use super::super::{
    CallError, ErrorClass, PromptDetails, Target, Usage,
    output::{Completion, FinishReason, ToolCallOut},
    translated::{Translated, malformed},
};
use super::NAME;

/// A complete Converse answer, translated.
pub fn completion(target: &Target<'_>, body: &[u8]) -> Result<Translated, CallError> {
    let answer: ConverseResponse = serde_json::from_slice(body)
        .map_err(|e| malformed(NAME, format!("the Converse answer: {e}")))?;
    let mut completion = Completion::new(&target.deployment.model);
    let choice = completion.choice();
    for block in answer.output.message.content {
        if let Some(text) = block.text {
            choice.push_text(&text);
        }
        if let Some(call) = block.tool_use {
            choice.tool_calls.push(ToolCallOut {
                id: call.tool_use_id,
                name: call.name,
                arguments: arguments(&call.input),
            });
        }
        // Reasoning, citations and other blocks have no place in a chat completion.
    }
    choice.finish_reason = Some(finish_reason(&answer.stop_reason)?);
    completion.usage = answer.usage.to_openai();
    Ok(Translated {
        body: completion.to_json(),
        usage: Some(completion.usage),
    })
}

/// A tool input as OpenAI's arguments text (`{}` when the model sent none).
pub fn arguments(input: &Value) -> String {
    if input.is_null() {
        "{}".to_owned()
    } else {
        input.to_string()
    }
}

/// OpenAI's finish reason for a Converse `stopReason` (providers.md §3). A malformed model
/// output or tool call is a failed attempt, not an answer: what it holds cannot be trusted.
pub fn finish_reason(stop_reason: &str) -> Result<FinishReason, CallError> {
    Ok(match stop_reason {
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        "malformed_model_output" | "malformed_tool_use" => {
            return Err(CallError::generation_failed(
                ErrorClass::Upstream,
                NAME,
                &format!("the model's answer was unusable ({stop_reason})"),
            ));
        }
        // `end_turn`, `stop_sequence`, and whatever a newer API adds.
        _ => FinishReason::Stop,
    })
}

/// Converse's `TokenUsage`. Cache reads and writes are counted outside `inputTokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_write_input_tokens: Option<u64>,
}

impl TokenUsage {
    /// In OpenAI's accounting: the prompt includes cached tokens, read or written.
    pub fn to_openai(&self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self.input_tokens + cached + self.cache_write_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: prompt + self.output_tokens,
            prompt_tokens_details: Some(PromptDetails {
                cached_tokens: cached,
            }),
            // Converse does not report reasoning tokens apart (they are in `outputTokens`).
            completion_tokens_details: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: Output,
    stop_reason: String,
    #[serde(default)]
    usage: TokenUsage,
}

#[derive(Deserialize)]
struct Output {
    message: OutputMessage,
}

#[derive(Deserialize)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<ContentBlock>,
}

/// A `ContentBlock` union member; the members a completion carries are named.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cache_reads_and_writes_into_the_prompt() {
        let usage: TokenUsage = serde_json::from_str(
            r#"{"inputTokens":12,"outputTokens":5,"totalTokens":17,"cacheReadInputTokens":100,"cacheWriteInputTokens":20}"#,
        )
        .unwrap();
        let usage = usage.to_openai();
        assert_eq!(usage.prompt_tokens, 132);
        assert_eq!(usage.cached_tokens(), 100);
        assert_eq!(usage.completion_tokens, 5);
        assert_eq!(usage.total_tokens, 137);
    }

    #[test]
    fn maps_every_stop_reason() {
        for (reason, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("tool_use", FinishReason::ToolCalls),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("guardrail_intervened", FinishReason::ContentFilter),
            ("content_filtered", FinishReason::ContentFilter),
            ("something_new", FinishReason::Stop),
        ] {
            assert_eq!(finish_reason(reason).unwrap(), want, "{reason}");
        }
        for reason in ["malformed_model_output", "malformed_tool_use"] {
            let error = finish_reason(reason).unwrap_err();
            assert_eq!(error.class(), ErrorClass::Upstream, "{reason}");
            assert!(error.message.contains(reason));
        }
    }
}
