//! Where Mistral's and DeepSeek's answers differ from OpenAI's, normalised to OpenAI's values:
//! - finish reasons: Mistral's `model_length` is `length`; Mistral's `error` and DeepSeek's
//!   `insufficient_system_resource` (the generation was cut short) are failures, not answers;
//! - Mistral's content arrays (Magistral's `thinking` chunks next to `text` chunks) are flattened
//!   to the text; the thinking is left out;
//! - tool-call `arguments` sent as a JSON object (Mistral allows either) become JSON text;
//! - cached prompt tokens reported as DeepSeek's `prompt_cache_hit_tokens` or Mistral's
//!   `num_cached_tokens`/`prompt_token_details` also go in `prompt_tokens_details.cached_tokens`.
//!
//! Everything else, extension members included, is kept; an answer that needed no change keeps
//! its bytes.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::{
    CallError, ErrorClass, Usage,
    translated::{Translated, malformed},
};

/// A complete `chat.completion`, normalised, and its usage.
pub fn completion(provider: &'static str, body: &[u8]) -> Result<Translated, CallError> {
    let mut answer: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(provider, format!("the response is not valid JSON: {e}")))?;
    let Some(fields) = answer.as_object_mut() else {
        return Err(malformed(provider, "the response is not a JSON object"));
    };
    let mut changed = false;
    if let Some(Value::Array(choices)) = fields.get_mut("choices") {
        for choice in choices {
            changed |= choice_normalised(provider, choice, "message")?;
        }
    }
    let usage = match fields.get_mut("usage") {
        Some(usage) if !usage.is_null() => {
            changed |= usage_normalised(usage);
            Some(read_usage(provider, usage)?)
        }
        _ => None,
    };
    let body = if changed {
        Bytes::from(answer.to_string())
    } else {
        // DeepSeek may send blank keep-alive lines before the JSON.
        Bytes::copy_from_slice(body.trim_ascii())
    };
    Ok(Translated { body, usage })
}

/// Normalises one choice in place (`member` is `message` in answers, `delta` in chunks) and says
/// whether anything changed; a finish reason that means the provider failed is an error.
pub fn choice_normalised(
    provider: &'static str,
    choice: &mut Value,
    member: &str,
) -> Result<bool, CallError> {
    let Some(choice) = choice.as_object_mut() else {
        return Ok(false);
    };
    let mut changed = false;
    match choice.get("finish_reason").and_then(Value::as_str) {
        Some("model_length") => {
            choice.insert("finish_reason".to_owned(), json!("length"));
            changed = true;
        }
        Some("error") => {
            return Err(CallError::generation_failed(
                ErrorClass::Upstream,
                provider,
                "the generation failed (finish_reason `error`)",
            ));
        }
        Some("insufficient_system_resource") => {
            return Err(CallError::generation_failed(
                ErrorClass::Overloaded,
                provider,
                "the generation was cut short for lack of server capacity \
                 (finish_reason `insufficient_system_resource`)",
            ));
        }
        _ => {}
    }
    let Some(message) = choice.get_mut(member).and_then(Value::as_object_mut) else {
        return Ok(changed);
    };
    if let Some(Value::Array(parts)) = message.get("content") {
        let text = flattened(parts);
        message.insert("content".to_owned(), text);
        changed = true;
    }
    if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
        for call in calls {
            if let Some(arguments) = call.pointer_mut("/function/arguments")
                && arguments.is_object()
            {
                *arguments = Value::String(arguments.to_string());
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// The text chunks of a content array joined (`null` when there are none: a thinking-only delta).
fn flattened(parts: &[Value]) -> Value {
    let mut text: Option<String> = None;
    for part in parts {
        if part.get("type").and_then(Value::as_str) == Some("text")
            && let Some(piece) = part.get("text").and_then(Value::as_str)
        {
            text.get_or_insert_with(String::new).push_str(piece);
        }
    }
    text.map_or(Value::Null, Value::String)
}

/// Puts cached prompt tokens where OpenAI reports them, when the provider reported them
/// elsewhere; says whether it changed anything.
pub fn usage_normalised(usage: &mut Value) -> bool {
    let Some(usage) = usage.as_object_mut() else {
        return false;
    };
    if usage
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .is_some_and(|c| !c.is_null())
    {
        return false;
    }
    let cached = usage
        .get("prompt_cache_hit_tokens")
        .or_else(|| usage.get("num_cached_tokens"))
        .or_else(|| usage.get("prompt_token_details")?.get("cached_tokens"))
        .and_then(Value::as_u64);
    let Some(cached) = cached else {
        return false;
    };
    match usage.get_mut("prompt_tokens_details") {
        Some(Value::Object(details)) => {
            details.insert("cached_tokens".to_owned(), json!(cached));
        }
        _ => {
            let details = Map::from_iter([("cached_tokens".to_owned(), json!(cached))]);
            usage.insert("prompt_tokens_details".to_owned(), Value::Object(details));
        }
    }
    true
}

/// OpenAI's `usage` object, read (after `usage_normalised`).
pub fn read_usage(provider: &str, usage: &Value) -> Result<Usage, CallError> {
    Usage::deserialize(usage).map_err(|e| malformed(provider, format!("unreadable usage: {e}")))
}

/// An error event inside a stream: a server-side failure (its message is not passed on, as it
/// is not the caller's own mistake).
pub fn stream_failed(provider: &str) -> CallError {
    CallError::generation_failed(
        ErrorClass::Upstream,
        provider,
        "the stream reported an error",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_copied_from_where_the_provider_put_them() {
        for (usage, cached) in [
            (
                json!({"prompt_tokens": 10, "prompt_cache_hit_tokens": 6}),
                6,
            ),
            (json!({"prompt_tokens": 10, "num_cached_tokens": 4}), 4),
            (
                json!({"prompt_tokens": 10, "prompt_token_details": {"cached_tokens": 3}}),
                3,
            ),
            (
                json!({"prompt_tokens": 10, "prompt_tokens_details": {"audio_tokens": 0}, "num_cached_tokens": 2}),
                2,
            ),
        ] {
            let mut usage = usage;
            assert!(usage_normalised(&mut usage), "{usage}");
            assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], cached);
        }
        let mut reported =
            json!({"prompt_tokens_details": {"cached_tokens": 5}, "prompt_cache_hit_tokens": 6});
        assert!(!usage_normalised(&mut reported), "OpenAI's own field wins");
        assert!(!usage_normalised(&mut json!({"prompt_tokens": 1})));
        assert!(
            !usage_normalised(&mut json!(7)),
            "not an object: left alone"
        );
    }

    #[test]
    fn choices_are_normalised_and_failures_are_errors() {
        let mut choice = json!({"index": 0, "finish_reason": "model_length", "message": {
            "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]},
                        {"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            "tool_calls": [{"id": "D681PevKs", "function": {"name": "f", "arguments": {"a": 1}}}]}});
        assert!(choice_normalised("mistral", &mut choice, "message").unwrap());
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(choice["message"]["content"], "AB");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"a":1}"#
        );
        let mut thinking = json!({"delta": {"content": [{"type": "thinking", "thinking": []}]}});
        assert!(choice_normalised("mistral", &mut thinking, "delta").unwrap());
        assert_eq!(thinking["delta"]["content"], Value::Null);
        let mut plain = json!({"finish_reason": "stop", "message": {"content": "x"}});
        assert!(!choice_normalised("mistral", &mut plain, "message").unwrap());

        let error = choice_normalised("mistral", &mut json!({"finish_reason": "error"}), "delta")
            .unwrap_err();
        assert_eq!(error.class(), ErrorClass::Upstream);
        let short = json!({"finish_reason": "insufficient_system_resource"});
        let error = choice_normalised("deepseek", &mut short.clone(), "message").unwrap_err();
        assert_eq!(error.class(), ErrorClass::Overloaded);
        assert_eq!(error.status.map(|s| s.as_u16()), Some(503));
    }
}
