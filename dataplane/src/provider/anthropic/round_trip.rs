//! The adapter over HTTP against the fake provider's independent reading of the Messages API.
//! The fake checks a few things the real API refuses (no `x-api-key`, `anthropic-version` or
//! `max_tokens`, an empty text block, a tool result without its call, a malformed tool-use id):
//! a request it answers passes those checks, not every check Anthropic makes.

use std::time::Duration;

use bytes::Bytes;
use fake_provider::{FakeProvider, Script};
use futures_util::StreamExt;
use modelgate_crds::compiled::CompiledDeployment;
use serde_json::{Value, json};

use crate::{
    provider::{
        AttemptTimeouts, Call, CallError, Endpoint, ErrorClass, HttpClients, Provider,
        UpstreamBody, translated::Translating,
    },
    request::JsonRequest,
};

async fn call(fake: &FakeProvider, request: Value) -> Result<UpstreamBody, CallError> {
    let deployment: CompiledDeployment = serde_json::from_value(json!({
        "id": "ns/group/claude", "name": "claude", "provider": "anthropic",
        "model": "claude-upstream", "baseUrl": fake.base_url(), "apiKey": "sk-ant-round-trip",
        "weight": 1, "tags": [], "timeouts": {},
    }))
    .unwrap();
    let stream = request["stream"] == json!(true);
    let request = JsonRequest::parse(Bytes::from(request.to_string())).unwrap();
    let timeout = Duration::from_secs(5);
    Translating(super::Anthropic)
        .call(Call {
            endpoint: Endpoint::ChatCompletions,
            request: &request,
            native: None,
            stream,
            deployment: &deployment,
            http: HttpClients::default().client(timeout, true),
            timeouts: AttemptTimeouts {
                first_byte: timeout,
                idle: timeout,
                connect: timeout,
            },
            trace: None,
        })
        .await
}

async fn complete(fake: &FakeProvider, request: Value) -> Value {
    match call(fake, request).await {
        Ok(UpstreamBody::Complete { body, .. }) => serde_json::from_slice(&body).unwrap(),
        Ok(UpstreamBody::Stream(_) | UpstreamBody::Native(_)) => {
            panic!("a stream or a native answer for a complete chat call")
        }
        Err(e) => panic!("the call failed: {e:?}"),
    }
}

async fn streamed(fake: &FakeProvider, request: Value) -> (String, Result<(), CallError>) {
    let Ok(UpstreamBody::Stream(mut chunks)) = call(fake, request).await else {
        panic!("no stream for a streamed call");
    };
    let mut text = String::new();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
            Err(e) => return (text, Err(e)),
        }
    }
    (text, Ok(()))
}

fn chunks(sse: &str) -> Vec<Value> {
    sse.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]"#;

#[tokio::test]
async fn a_tool_round_trip_is_accepted_and_answered() {
    let fake = FakeProvider::start().await.unwrap();
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let first = complete(
        &fake,
        json!({"model": "claude", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Weather in Paris?"}],
               "tools": tools}),
    )
    .await;
    let message = &first["choices"][0]["message"];
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let call = &message["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let second = complete(
        &fake,
        json!({"model": "claude", "tools": tools, "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]}),
    )
    .await;
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "tool result received: sunny"
    );
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(
        sent.headers.get("x-api-key").map(String::as_str),
        Some("sk-ant-round-trip")
    );
    assert_eq!(
        sent.body["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
}

#[tokio::test]
async fn a_streamed_tool_call_and_text_arrive_as_openai_chunks() {
    let fake = FakeProvider::start().await.unwrap();
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let (sse, result) = streamed(
        &fake,
        json!({"model": "claude", "stream": true, "tools": tools,
               "messages": [{"role": "user", "content": "Weather?"}]}),
    )
    .await;
    result.unwrap();
    let arguments: String = chunks(&sse)
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(arguments, "{}");
    assert!(sse.ends_with("data: [DONE]\n\n"));

    let (sse, result) = streamed(
        &fake,
        json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    result.unwrap();
    let text: String = chunks(&sse)
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, format!("{}hi", fake_provider::CHAT_PREFIX));
    let usage = chunks(&sse).last().unwrap()["usage"].clone();
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn errors_and_broken_streams_are_classified() {
    let fake = FakeProvider::start().await.unwrap();
    let hello = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
    fake.push(Script::status(429));
    let limited = call(&fake, hello.clone()).await.err().unwrap();
    assert_eq!(limited.class(), ErrorClass::RateLimit);
    assert_eq!(limited.retry_after, Some(Duration::from_secs(1)));
    fake.push(Script::status(529));
    let overloaded = call(&fake, hello.clone()).await.err().unwrap();
    assert_eq!(overloaded.class(), ErrorClass::Overloaded);

    let mut stream = hello;
    stream["stream"] = json!(true);
    fake.push(Script::StreamErrorAfter { chunks: 3 });
    let (_, result) = streamed(&fake, stream.clone()).await;
    assert_eq!(result.unwrap_err().class(), ErrorClass::Overloaded);
    fake.push(Script::CutStreamAfter { chunks: 3 });
    let (sse, result) = streamed(&fake, stream).await;
    assert!(result.is_err(), "a cut stream must fail");
    assert!(!sse.contains("[DONE]"));
}
