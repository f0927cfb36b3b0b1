//! What complete and streamed answers share: the usage object and the stop reasons, read into
//! OpenAI's accounting and vocabulary.

use serde::Deserialize;

use crate::provider::{CompletionDetails, PromptDetails, Usage, output::FinishReason};

/// Anthropic's `usage`. Every count is optional: streams report the input side in
/// `message_start` and cumulative counts in `message_delta`, and either may leave a count out.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(super) struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    output_tokens_details: Option<OutputTokensDetails>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct OutputTokensDetails {
    #[serde(default)]
    thinking_tokens: u64,
}

impl WireUsage {
    /// Takes the counts a later event reports; they are cumulative, so each replaces the last.
    pub(super) fn update(&mut self, later: &Self) {
        fn take<T: Copy>(current: &mut Option<T>, later: Option<T>) {
            if later.is_some() {
                *current = later;
            }
        }
        take(&mut self.input_tokens, later.input_tokens);
        take(
            &mut self.cache_creation_input_tokens,
            later.cache_creation_input_tokens,
        );
        take(
            &mut self.cache_read_input_tokens,
            later.cache_read_input_tokens,
        );
        take(&mut self.output_tokens, later.output_tokens);
        take(&mut self.output_tokens_details, later.output_tokens_details);
    }

    /// In OpenAI's accounting: Anthropic's `input_tokens` leaves out cache reads and writes,
    /// OpenAI's `prompt_tokens` counts them; `output_tokens` already includes thinking.
    pub(super) fn to_openai(self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt =
            self.input_tokens.unwrap_or(0) + self.cache_creation_input_tokens.unwrap_or(0) + cached;
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: Some(PromptDetails {
                cached_tokens: cached,
            }),
            // Absent means unknown, not zero: older answers do not break thinking out.
            completion_tokens_details: self.output_tokens_details.map(|d| CompletionDetails {
                reasoning_tokens: d.thinking_tokens,
            }),
        }
    }
}

/// `stop_reason` in OpenAI's words.
pub(super) fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        // `pause_turn`: a server-tool loop paused; the client may send the turn again.
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => {
            // New reasons come under Anthropic's versioning policy; the answer itself is fine,
            // but a reason read as `stop` may hide a meaning the mapping should learn.
            tracing::warn!(
                stop_reason = other,
                "anthropic: unknown stop reason, read as stop"
            );
            FinishReason::Stop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(json: &str) -> WireUsage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn prompt_tokens_count_cache_reads_and_writes() {
        let openai = usage(
            r#"{"input_tokens":10,"cache_creation_input_tokens":200,"cache_read_input_tokens":3000,
                "output_tokens":40,"output_tokens_details":{"thinking_tokens":25}}"#,
        )
        .to_openai();
        assert_eq!(openai.prompt_tokens, 3210);
        assert_eq!(openai.cached_tokens(), 3000);
        assert_eq!(openai.completion_tokens, 40);
        assert_eq!(openai.total_tokens, 3250);
        assert_eq!(
            openai.completion_tokens_details.map(|d| d.reasoning_tokens),
            Some(25)
        );
    }

    #[test]
    fn later_counts_replace_earlier_ones_and_missing_ones_keep_them() {
        let mut total =
            usage(r#"{"input_tokens":377,"cache_read_input_tokens":5,"output_tokens":1}"#);
        total.update(&usage(r#"{"output_tokens":65}"#));
        let openai = total.to_openai();
        assert_eq!((openai.prompt_tokens, openai.completion_tokens), (382, 65));
        total.update(&usage(
            r#"{"input_tokens":400,"output_tokens":70,"cache_read_input_tokens":null}"#,
        ));
        let openai = total.to_openai();
        assert_eq!((openai.prompt_tokens, openai.completion_tokens), (405, 70));
    }

    #[test]
    fn stop_reasons_map_to_openai_finish_reasons() {
        for (reason, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("pause_turn", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
            ("something_new", FinishReason::Stop),
        ] {
            assert_eq!(finish_reason(reason), want, "{reason}");
        }
    }
}
