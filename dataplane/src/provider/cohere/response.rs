//! Cohere's complete chat answer as a `chat.completion`, and the finish-reason and usage
//! readings the stream shares.

use serde::Deserialize;
use serde_json::Value;

use super::{
    super::{
        CallError, ErrorClass, PromptDetails, Usage,
        output::{Completion, FinishReason, ToolCallOut},
        translated::{Translated, malformed},
    },
    NAME,
};

#[derive(Deserialize)]
struct Answer {
    finish_reason: String,
    #[serde(default)]
    message: Option<MessageIn>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct MessageIn {
    #[serde(default)]
    content: Option<ContentIn>,
    #[serde(default)]
    tool_calls: Vec<ToolCallIn>,
}

/// `content` is a list of `text`/`thinking` blocks (a bare string is taken too).
#[derive(Deserialize)]
#[serde(untagged)]
enum ContentIn {
    Text(String),
    Blocks(Vec<BlockIn>),
}

#[derive(Deserialize)]
struct BlockIn {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ToolCallIn {
    id: String,
    function: FunctionIn,
}

#[derive(Deserialize)]
struct FunctionIn {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

/// Cohere's `usage` (counts are JSON numbers that may carry a fraction part).
#[derive(Deserialize, Default)]
pub struct UsageIn {
    #[serde(default)]
    tokens: Option<Tokens>,
    #[serde(default)]
    billed_units: Option<Tokens>,
    #[serde(default)]
    cached_tokens: Option<f64>,
}

#[derive(Deserialize, Default)]
struct Tokens {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

pub fn completion(model: &str, body: &[u8]) -> Result<Translated, CallError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| malformed(NAME, format!("unreadable chat answer: {e}")))?;
    let reason = finish_reason(&answer.finish_reason)?;
    let mut completion = Completion::new(model);
    let choice = completion.choice();
    choice.finish_reason = Some(reason);
    if let Some(message) = answer.message {
        match message.content {
            Some(ContentIn::Text(text)) => choice.push_text(&text),
            Some(ContentIn::Blocks(blocks)) => {
                for block in blocks.iter().filter(|b| b.kind == "text") {
                    choice.push_text(block.text.as_deref().unwrap_or_default());
                }
            }
            None => {}
        }
        choice.tool_calls = message
            .tool_calls
            .into_iter()
            .map(|call| ToolCallOut {
                id: call.id,
                name: call.function.name,
                arguments: arguments(call.function.arguments),
            })
            .collect();
    }
    completion.usage = answer.usage.as_ref().map(usage).unwrap_or_default();
    Ok(Translated {
        body: completion.to_json(),
        usage: Some(completion.usage),
    })
}

/// Tool arguments as JSON text: Cohere sends a string, `{}` when a tool takes none.
fn arguments(arguments: Option<Value>) -> String {
    match arguments {
        Some(Value::String(text)) if !text.trim().is_empty() => text,
        Some(Value::Object(object)) => Value::Object(object).to_string(),
        _ => "{}".to_owned(),
    }
}

/// Cohere's finish reason in OpenAI's terms; `ERROR` and `TIMEOUT` are failures, not answers.
pub fn finish_reason(reason: &str) -> Result<FinishReason, CallError> {
    match reason {
        "COMPLETE" | "STOP_SEQUENCE" => Ok(FinishReason::Stop),
        "MAX_TOKENS" => Ok(FinishReason::Length),
        "TOOL_CALL" => Ok(FinishReason::ToolCalls),
        "ERROR" => Err(generation_failed(
            "the generation failed (finish_reason ERROR)",
        )),
        "TIMEOUT" => Err(generation_failed(
            "the generation timed out (finish_reason TIMEOUT)",
        )),
        // A reason this adapter does not know yet: the answer is there, so it stopped.
        _ => Ok(FinishReason::Stop),
    }
}

/// A server-side failure reported inside a 2xx answer (its text is Cohere's, not the caller's
/// mistake, so it is not passed on).
pub fn generation_failed(what: &str) -> CallError {
    CallError::generation_failed(ErrorClass::Upstream, NAME, what)
}

/// Cohere's usage in OpenAI's terms: `tokens` (what the model read and wrote), or the billed
/// units when a response has no `tokens`.
pub fn usage(usage: &UsageIn) -> Usage {
    let counts = usage
        .tokens
        .as_ref()
        .or(usage.billed_units.as_ref())
        .map_or((0, 0), |t| (count(t.input_tokens), count(t.output_tokens)));
    Usage {
        prompt_tokens: counts.0,
        completion_tokens: counts.1,
        total_tokens: counts.0 + counts.1,
        prompt_tokens_details: usage.cached_tokens.map(|c| PromptDetails {
            cached_tokens: count(Some(c)),
        }),
        completion_tokens_details: None,
    }
}

fn count(value: Option<f64>) -> u64 {
    // Token counts are whole numbers sent as JSON numbers; negative or absent is none.
    value.map_or(0, |v| v.max(0.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_prefers_model_tokens_and_falls_back_to_billed_units() {
        let both: UsageIn = serde_json::from_str(
            r#"{"billed_units":{"input_tokens":127,"output_tokens":69},
                "tokens":{"input_tokens":1032,"output_tokens":124},"cached_tokens":512}"#,
        )
        .unwrap();
        let usage = usage(&both);
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (1032, 124, 1156)
        );
        assert_eq!(usage.cached_tokens(), 512);
        let billed: UsageIn =
            serde_json::from_str(r#"{"billed_units":{"input_tokens":5.0,"output_tokens":26}}"#)
                .unwrap();
        let usage = super::usage(&billed);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 26));
        assert_eq!(usage.prompt_tokens_details, None);
    }

    #[test]
    fn finish_reasons_map_to_openai_and_failures_are_errors() {
        assert_eq!(finish_reason("COMPLETE").unwrap(), FinishReason::Stop);
        assert_eq!(finish_reason("STOP_SEQUENCE").unwrap(), FinishReason::Stop);
        assert_eq!(finish_reason("MAX_TOKENS").unwrap(), FinishReason::Length);
        assert_eq!(finish_reason("TOOL_CALL").unwrap(), FinishReason::ToolCalls);
        for failed in ["ERROR", "TIMEOUT"] {
            let error = finish_reason(failed).unwrap_err();
            assert_eq!(error.class(), ErrorClass::Upstream, "{failed}");
            assert!(!error.is_client_error());
        }
    }
}
