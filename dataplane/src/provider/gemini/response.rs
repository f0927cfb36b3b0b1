//! Gemini's `GenerateContentResponse`, read: the wire types a complete answer and every stream
//! chunk share, and the mappings to OpenAI's finish reasons, tool calls and usage.

use serde::Deserialize;
use serde_json::Value;

use super::{error::RpcStatus, tool_ids};
use crate::provider::{
    CallError, CompletionDetails, ErrorClass, PromptDetails, Usage,
    output::{ChoiceOut, Completion, FinishReason, ToolCallOut},
    translated::{Translated, malformed},
};

/// A whole answer, or one stream chunk (which holds only the new parts).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    /// Only inside a stream: the provider failed after the answer began.
    #[serde(default)]
    pub error: Option<RpcStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default)]
    pub content: Option<CandidateContent>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub index: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CandidateContent {
    #[serde(default)]
    pub parts: Vec<PartOut>,
}

/// One part of the model's output. Kinds not named here (code execution, inline media) have no
/// OpenAI chat equivalent and are not requested by this adapter.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartOut {
    #[serde(default)]
    pub text: Option<String>,
    /// A thought summary: never requested, and not part of the answer.
    #[serde(default)]
    pub thought: bool,
    #[serde(default)]
    pub function_call: Option<FunctionCallOut>,
    #[serde(default)]
    pub thought_signature: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCallOut {
    pub name: String,
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(default)]
    pub id: Option<String>,
}

impl PartOut {
    /// The answer text of this part, if it is one.
    pub fn answer_text(&self) -> Option<&str> {
        self.text.as_deref().filter(|_| !self.thought)
    }

    /// The OpenAI tool call this part makes, if it makes one: the signature rides in the id.
    pub fn tool_call(&self) -> Option<ToolCallOut> {
        let call = self.function_call.as_ref()?;
        Some(ToolCallOut {
            id: tool_ids::encode(call.id.as_deref(), self.thought_signature.as_deref()),
            name: call.name.clone(),
            arguments: match &call.args {
                Some(args @ Value::Object(_)) => args.to_string(),
                _ => "{}".to_owned(),
            },
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
    #[serde(default)]
    pub block_reason_message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub total_token_count: Option<u64>,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
}

/// A complete answer in OpenAI's shape, one choice per candidate.
pub fn completion(provider: &str, model: &str, body: &[u8]) -> Result<Translated, CallError> {
    let response: GenerateContentResponse = serde_json::from_slice(body).map_err(|e| {
        malformed(
            provider,
            format!("the answer is not a GenerateContentResponse: {e}"),
        )
    })?;
    refuse_blocked_prompt(provider, &response)?;
    if response.candidates.is_empty() {
        return Err(malformed(provider, "the answer has no candidates"));
    }
    let mut candidates = response.candidates;
    candidates.sort_by_key(|c| c.index.unwrap_or(0));
    let mut completion = Completion::new(model);
    completion.choices = candidates.iter().map(choice).collect();
    let usage = response
        .usage_metadata
        .as_ref()
        .map(usage)
        .unwrap_or_default();
    completion.usage = usage;
    Ok(Translated {
        body: completion.to_json(),
        usage: Some(usage),
    })
}

fn choice(candidate: &Candidate) -> ChoiceOut {
    let mut choice = ChoiceOut::default();
    for part in candidate.content.iter().flat_map(|c| &c.parts) {
        if let Some(text) = part.answer_text() {
            choice.push_text(text);
        }
        if let Some(call) = part.tool_call() {
            choice.tool_calls.push(call);
        }
    }
    // `ChoiceOut` turns a plain stop into `tool_calls` when the model called functions: Gemini
    // says `STOP` on those turns.
    choice.finish_reason = Some(
        candidate
            .finish_reason
            .as_deref()
            .map_or(FinishReason::Stop, finish_reason),
    );
    choice
}

/// A prompt Gemini blocked comes back as a 200 with `promptFeedback.blockReason` and no
/// candidates. It becomes a 400 content-policy error, as OpenAI and Azure answer a refused
/// prompt; an empty `content_filter` answer would look like success to a client that does not
/// read finish reasons.
pub fn refuse_blocked_prompt(
    provider: &str,
    response: &GenerateContentResponse,
) -> Result<(), CallError> {
    let Some(feedback) = &response.prompt_feedback else {
        return Ok(());
    };
    let Some(reason) = &feedback.block_reason else {
        return Ok(());
    };
    if !response.candidates.is_empty() {
        return Ok(());
    }
    let mut message = format!("the prompt was blocked by {provider}'s safety filters ({reason})");
    if let Some(detail) = &feedback.block_reason_message {
        message.push_str(": ");
        message.push_str(detail);
    }
    Err(CallError::classified(
        ErrorClass::ContentPolicy,
        &http::HeaderMap::new(),
        None,
        Some(message),
        provider,
    ))
}

/// Gemini's finish reason in OpenAI's vocabulary (`providers.md` §3, the recommended column).
pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "LANGUAGE"
        | "OTHER"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "IMAGE_OTHER" => FinishReason::ContentFilter,
        "STOP" | "FINISH_REASON_UNSPECIFIED" | "NO_IMAGE" => FinishReason::Stop,
        // The model botched a call: there is no call to report, the turn just ends.
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS" => {
            tracing::warn!(
                finish_reason = reason,
                "gemini: the model's function call failed"
            );
            FinishReason::Stop
        }
        other => {
            tracing::warn!(finish_reason = other, "gemini: unknown finish reason");
            FinishReason::Stop
        }
    }
}

/// Gemini's counts in OpenAI's accounting. The prompt includes cached tokens already (and the
/// prompt of built-in tool use); the completion is the answer plus the thoughts, except on the
/// model versions that count thoughts inside `candidatesTokenCount`, which the total reveals.
pub fn usage(meta: &UsageMetadata) -> Usage {
    let prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count;
    let thoughts = meta.thoughts_token_count;
    let candidates = meta.candidates_token_count;
    let thoughts_inside = thoughts > 0 && meta.total_token_count == Some(prompt + candidates);
    let completion = if thoughts_inside {
        candidates
    } else {
        candidates + thoughts
    };
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: Some(PromptDetails {
            cached_tokens: meta.cached_content_token_count,
        }),
        completion_tokens_details: Some(CompletionDetails {
            reasoning_tokens: thoughts,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(prompt: u64, candidates: u64, thoughts: u64, total: Option<u64>) -> UsageMetadata {
        UsageMetadata {
            prompt_token_count: prompt,
            candidates_token_count: candidates,
            thoughts_token_count: thoughts,
            total_token_count: total,
            ..UsageMetadata::default()
        }
    }

    #[test]
    fn thoughts_are_added_to_the_completion_unless_the_total_says_they_are_in_it() {
        // The spec's example: 74 + 16 + 61 = 151.
        let separate = usage(&meta(74, 16, 61, Some(151)));
        assert_eq!(
            (
                separate.prompt_tokens,
                separate.completion_tokens,
                separate.total_tokens
            ),
            (74, 77, 151)
        );
        assert_eq!(
            separate.completion_tokens_details.unwrap().reasoning_tokens,
            61
        );
        let inside = usage(&meta(74, 77, 61, Some(151)));
        assert_eq!((inside.completion_tokens, inside.total_tokens), (77, 151));
        let no_total = usage(&meta(10, 5, 3, None));
        assert_eq!(no_total.completion_tokens, 8);
    }

    #[test]
    fn cached_and_tool_use_prompt_tokens_are_prompt_tokens() {
        let counted = usage(&UsageMetadata {
            prompt_token_count: 100,
            cached_content_token_count: 60,
            tool_use_prompt_token_count: 7,
            candidates_token_count: 3,
            total_token_count: Some(110),
            ..UsageMetadata::default()
        });
        assert_eq!(counted.prompt_tokens, 107);
        assert_eq!(counted.cached_tokens(), 60);
        assert_eq!(counted.total_tokens, 110);
    }

    #[test]
    fn every_finish_reason_maps_to_an_openai_value() {
        assert_eq!(finish_reason("STOP"), FinishReason::Stop);
        assert_eq!(finish_reason("MAX_TOKENS"), FinishReason::Length);
        for filtered in [
            "SAFETY",
            "RECITATION",
            "OTHER",
            "PROHIBITED_CONTENT",
            "SPII",
            "BLOCKLIST",
        ] {
            assert_eq!(
                finish_reason(filtered),
                FinishReason::ContentFilter,
                "{filtered}"
            );
        }
        assert_eq!(finish_reason("MALFORMED_FUNCTION_CALL"), FinishReason::Stop);
        assert_eq!(finish_reason("SOMETHING_NEW"), FinishReason::Stop);
    }
}
