//! A chat completion (what every translating provider answers, and what the cache holds) as a
//! Responses answer.

use serde_json::{Value, json};

/// `resp_` and the completion's id, so one call has one id on both sides.
pub fn response_id(chat_id: Option<&str>) -> String {
    let id = chat_id.unwrap_or_default();
    format!("resp_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

/// Responses usage from chat usage.
pub fn usage(chat_usage: &Value) -> Value {
    let input = chat_usage["prompt_tokens"].as_u64().unwrap_or(0);
    let output = chat_usage["completion_tokens"].as_u64().unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": chat_usage.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64).unwrap_or(0)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": chat_usage.pointer("/completion_tokens_details/reasoning_tokens").and_then(Value::as_u64).unwrap_or(0)},
        "total_tokens": input + output,
    })
}

pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

pub fn function_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": format!("fc_{}", call_id.strip_prefix("call_").unwrap_or(call_id)),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// The response object around `output`: `completed`, or `incomplete` when the answer hit its
/// token limit.
pub fn envelope(
    id: &str,
    model: &Value,
    created_at: i64,
    output: Vec<Value>,
    finish_reason: Option<&str>,
    usage: Option<Value>,
    status: &str,
) -> Value {
    let incomplete = finish_reason == Some("length");
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": if incomplete && status == "completed" { "incomplete" } else { status },
        "error": null,
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {},
    })
}

/// The Responses answer for a chat completion.
pub fn to_response(completion: &Value) -> Value {
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let id = response_id(completion["id"].as_str());
    let mut output = Vec::new();
    let text = message["content"]
        .as_str()
        .or_else(|| message["refusal"].as_str())
        .unwrap_or_default();
    if !text.is_empty() {
        output.push(message_item(
            &format!("msg_{}_0", &id[5..]),
            text,
            "completed",
        ));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        output.push(function_item(
            call["id"].as_str().unwrap_or_default(),
            call["function"]["name"].as_str().unwrap_or_default(),
            call["function"]["arguments"].as_str().unwrap_or_default(),
            "completed",
        ));
    }
    envelope(
        &id,
        &completion["model"],
        completion["created"].as_i64().unwrap_or(0),
        output,
        choice["finish_reason"].as_str(),
        Some(usage(&completion["usage"])),
        "completed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_calls_become_output_items() {
        let completion = json!({
            "id": "chatcmpl-7", "model": "claude", "created": 1700000000,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
            }}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        });
        let response = to_response(&completion);
        assert_eq!(response["id"], "resp_7");
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(response["output"][1]["call_id"], "call_9");
        assert_eq!(response["output"][1]["id"], "fc_9");
        assert_eq!(response["usage"]["total_tokens"], 16);
    }

    #[test]
    fn a_length_finish_is_incomplete() {
        let completion = json!({"id": "chatcmpl-1", "model": "m", "choices": [{"finish_reason": "length", "message": {"content": "cut"}}], "usage": {}});
        let response = to_response(&completion);
        assert_eq!(response["status"], "incomplete");
        assert_eq!(
            response["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }
}
