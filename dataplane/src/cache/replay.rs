//! A stored chat completion replayed as the SSE stream a provider would have sent: for each
//! choice a role chunk, its content, its tool calls, and its finish; then the usage chunk when
//! the client asked for it; then `[DONE]`.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

/// The SSE bytes of `completion` (a chat completion body); `None` if it is not one.
pub fn as_stream(completion: &[u8], include_usage: bool) -> Option<Bytes> {
    let answer: Value = serde_json::from_slice(completion).ok()?;
    let choices = answer["choices"].as_array()?;
    let mut out = BytesMut::new();
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut chunk = json!({
            "id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"],
            "model": answer["model"], "choices": choices,
        });
        if let Some(fingerprint) = answer.get("system_fingerprint") {
            chunk["system_fingerprint"] = fingerprint.clone();
        }
        if include_usage {
            chunk["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        chunk
    };
    let mut push = |event: Value| {
        out.put_slice(b"data: ");
        out.put_slice(event.to_string().as_bytes());
        out.put_slice(b"\n\n");
    };
    for choice in choices {
        let index = &choice["index"];
        let message = &choice["message"];
        let delta = |delta: Value, finish: Value| json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        push(chunk(
            delta(
                json!({"role": message.get("role").unwrap_or(&json!("assistant")), "content": "", "refusal": null}),
                Value::Null,
            ),
            None,
        ));
        if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
            push(chunk(delta(json!({"content": text}), Value::Null), None));
        }
        if let Some(text) = message["refusal"].as_str() {
            push(chunk(delta(json!({"refusal": text}), Value::Null), None));
        }
        for (i, call) in message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let call = json!([{"index": i, "id": call["id"], "type": call["type"], "function": call["function"]}]);
            push(chunk(delta(json!({"tool_calls": call}), Value::Null), None));
        }
        push(chunk(
            delta(json!({}), choice["finish_reason"].clone()),
            None,
        ));
    }
    if include_usage {
        push(chunk(json!([]), answer.get("usage")));
    }
    out.put_slice(b"data: [DONE]\n\n");
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::assemble::StreamAssembler;

    #[test]
    fn a_replayed_stream_assembles_back_into_the_same_answer() {
        let completion = json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null,
                "message": {"role": "assistant", "content": "Hello", "refusal": null,
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        });
        let stream = as_stream(completion.to_string().as_bytes(), true).unwrap();
        assert!(stream.ends_with(b"data: [DONE]\n\n"));
        let mut assembler = StreamAssembler::default();
        assembler.feed(&stream);
        let back: Value = serde_json::from_slice(&assembler.finish().unwrap()).unwrap();
        assert_eq!(back["choices"], completion["choices"]);
        assert_eq!(back["usage"], completion["usage"]);
        let without_usage = as_stream(completion.to_string().as_bytes(), false).unwrap();
        assert!(!String::from_utf8_lossy(&without_usage).contains("usage"));
    }
}
