//! Cohere, Mistral, DeepSeek and Azure adapters against the fake provider's native dialects, over
//! real HTTP: the fake is as strict as each provider (Mistral's closed schemas and tool-call ids,
//! DeepSeek's roles, Azure's `api-version` and `api-key`), so a request the adapter shapes wrong
//! fails here, and an answer it reads wrong does too.

use std::time::Duration;

use bytes::Bytes;
use fake_provider::{CHAT_PREFIX, FakeProvider, Script};
use futures_util::StreamExt;
use modelgate_crds::{ProviderKind, compiled::CompiledDeployment};
use serde_json::{Value, json};

use super::{AttemptTimeouts, Call, CallError, Endpoint, HttpClients, UpstreamBody, registry};
use crate::request::JsonRequest;

struct Upstream {
    fake: FakeProvider,
    clients: HttpClients,
}

/// A complete answer's JSON, or a stream's OpenAI chunks (`[DONE]` as a string).
enum Answer {
    Complete(Value),
    Chunks(Vec<Value>),
}

impl Upstream {
    async fn start() -> Self {
        Self {
            fake: FakeProvider::start().await.unwrap(),
            clients: HttpClients::default(),
        }
    }

    fn deployment(&self, kind: ProviderKind, settings: Value) -> CompiledDeployment {
        let mut base = json!({
            "id": "test/group/deployment", "name": "deployment", "provider": kind,
            "model": "upstream-model", "apiKey": "test-key-123456", "weight": 1, "tags": [],
            "timeouts": {},
        });
        for (key, value) in settings.as_object().cloned().unwrap_or_default() {
            base[key] = value;
        }
        serde_json::from_value(base).unwrap()
    }

    async fn call(
        &self,
        deployment: &CompiledDeployment,
        endpoint: Endpoint,
        body: Value,
    ) -> Result<Answer, CallError> {
        let stream = body["stream"] == json!(true);
        let request = JsonRequest::parse(Bytes::from(body.to_string())).unwrap();
        let timeout = Duration::from_secs(5);
        let call = Call {
            endpoint,
            request: &request,
            native: None,
            stream,
            deployment,
            http: self.clients.client(timeout, true),
            timeouts: AttemptTimeouts {
                first_byte: timeout,
                idle: timeout,
                connect: timeout,
            },
            trace: None,
        };
        match registry(deployment.provider).call(call).await? {
            UpstreamBody::Complete { body, .. } => {
                Ok(Answer::Complete(serde_json::from_slice(&body).unwrap()))
            }
            UpstreamBody::Native(_) => panic!("no native request was made"),
            UpstreamBody::Stream(mut chunks) => {
                let mut text = Vec::new();
                while let Some(chunk) = chunks.next().await {
                    text.extend_from_slice(&chunk?);
                }
                let chunks = String::from_utf8(text)
                    .unwrap()
                    .split("\n\n")
                    .filter_map(|event| event.trim().strip_prefix("data: "))
                    .map(|data| serde_json::from_str(data).unwrap_or(json!(data)))
                    .collect();
                Ok(Answer::Chunks(chunks))
            }
        }
    }

    async fn complete(&self, deployment: &CompiledDeployment, body: Value) -> Value {
        match self.call(deployment, Endpoint::ChatCompletions, body).await {
            Ok(Answer::Complete(value)) => value,
            Ok(Answer::Chunks(_)) => panic!("a stream"),
            Err(e) => panic!("{e:?}"),
        }
    }

    async fn chunks(&self, deployment: &CompiledDeployment, body: Value) -> Vec<Value> {
        match self.call(deployment, Endpoint::ChatCompletions, body).await {
            Ok(Answer::Chunks(chunks)) => chunks,
            Ok(Answer::Complete(_)) => panic!("not a stream"),
            Err(e) => panic!("{e:?}"),
        }
    }
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

/// The text of a stream's content deltas, and its one usage chunk.
fn streamed(chunks: &[Value]) -> (String, Value) {
    assert_eq!(chunks.last(), Some(&json!("[DONE]")), "{chunks:?}");
    let text = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    let usage: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"] == json!([]))
        .collect();
    assert_eq!(usage.len(), 1, "one usage chunk: {chunks:?}");
    assert_eq!(
        usage[0],
        &chunks[chunks.len() - 2],
        "the usage chunk comes last"
    );
    (text, usage[0]["usage"].clone())
}

#[tokio::test]
async fn cohere_chats_streams_calls_tools_and_embeds() {
    let upstream = Upstream::start().await;
    let cohere = upstream.deployment(
        ProviderKind::Cohere,
        json!({"baseUrl": format!("http://{}", upstream.fake.addr())}),
    );
    let answer = upstream
        .complete(&cohere, json!({"messages": user("hello")}))
        .await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        format!("{CHAT_PREFIX}hello")
    );
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let chunks = upstream
        .chunks(&cohere, json!({"messages": user("a b c"), "stream": true}))
        .await;
    let (text, usage) = streamed(&chunks);
    assert_eq!(text, format!("{CHAT_PREFIX}a b c"));
    assert_eq!(usage["completion_tokens"], 8);

    let chunks = upstream
        .chunks(
            &cohere,
            json!({"messages": user("weather?"), "tools": tool(), "stream": true}),
        )
        .await;
    let arguments: String = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(arguments, "{}");
    assert!(
        chunks
            .iter()
            .any(|c| c.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls")))
    );

    let history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]);
    let answer = upstream
        .complete(&cohere, json!({"messages": history, "tools": tool()}))
        .await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tool result received: sunny"
    );

    let embed = upstream.deployment(
        ProviderKind::Cohere,
        json!({"baseUrl": format!("http://{}", upstream.fake.addr()), "model": "embed-v4.0"}),
    );
    let Answer::Complete(vectors) = upstream
        .call(
            &embed,
            Endpoint::Embeddings,
            json!({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 4}),
        )
        .await
        .unwrap()
    else {
        panic!("a stream");
    };
    assert_eq!(vectors["data"].as_array().unwrap().len(), 2);
    assert!(vectors["data"][1]["embedding"].is_string(), "base64");

    upstream.fake.push(Script::status(429));
    let error = upstream
        .call(
            &cohere,
            Endpoint::ChatCompletions,
            json!({"messages": user("x")}),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(error.class(), super::ErrorClass::RateLimit);
}

#[tokio::test]
async fn mistral_gets_only_what_its_closed_schema_takes() {
    let upstream = Upstream::start().await;
    let mistral = upstream.deployment(
        ProviderKind::Mistral,
        json!({"baseUrl": format!("http://{}/mistral/v1", upstream.fake.addr())}),
    );
    // `stream_options`, `user`, `seed`, `max_completion_tokens` and message names would be a 422.
    let chunks = upstream
        .chunks(
            &mistral,
            json!({"messages": [{"role": "developer", "content": "be brief"},
                                {"role": "user", "content": "a b", "name": "alice"}],
                   "stream": true, "stream_options": {"include_usage": true}, "user": "u1",
                   "seed": 3, "max_completion_tokens": 50}),
        )
        .await;
    let (text, usage) = streamed(&chunks);
    assert_eq!(text, format!("{CHAT_PREFIX}a b"));
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"] == json!([]) || c.get("usage").is_none()),
        "the usage left the finish chunk"
    );
    let sent = &upstream.fake.requests()[0].body;
    assert_eq!(sent["random_seed"], 3);
    assert_eq!(sent["max_tokens"], 50);

    // Foreign tool-call ids would be a 400.
    let history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0fypS1hVXr6hTZqgSv7Hk2Pz",
            "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_0fypS1hVXr6hTZqgSv7Hk2Pz", "content": "sunny"}]);
    let answer = upstream
        .complete(&mistral, json!({"messages": history, "tools": tool()}))
        .await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tool result received: sunny"
    );

    let Answer::Complete(vectors) = upstream
        .call(
            &mistral,
            Endpoint::Embeddings,
            json!({"input": "a", "dimensions": 3, "user": "u1"}),
        )
        .await
        .unwrap()
    else {
        panic!("a stream");
    };
    assert_eq!(vectors["data"][0]["embedding"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn deepseek_reports_cache_hits_and_reasoning_in_openai_terms() {
    let upstream = Upstream::start().await;
    let reasoner = upstream.deployment(
        ProviderKind::Deepseek,
        json!({"baseUrl": format!("http://{}/deepseek", upstream.fake.addr()), "model": "deepseek-reasoner"}),
    );
    let answer = upstream
        .complete(
            &reasoner,
            json!({"messages": [{"role": "developer", "content": "be brief"},
                                {"role": "user", "content": "hello"}]}),
        )
        .await;
    let usage = &answer["usage"];
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"],
        usage["prompt_cache_hit_tokens"]
    );
    assert!(
        usage["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(answer["choices"][0]["message"]["reasoning_content"].is_string());

    let chunks = upstream
        .chunks(&reasoner, json!({"messages": user("a b"), "stream": true}))
        .await;
    let (text, usage) = streamed(&chunks);
    assert_eq!(text, format!("{CHAT_PREFIX}a b"));
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"],
        usage["prompt_cache_hit_tokens"]
    );
}

#[tokio::test]
async fn azure_classic_and_v1_urls_and_the_opening_filter_chunk() {
    let upstream = Upstream::start().await;
    let base = format!("http://{}", upstream.fake.addr());
    let classic = upstream.deployment(ProviderKind::Azure, json!({"baseUrl": base}));
    let v1 = upstream.deployment(
        ProviderKind::Azure,
        json!({"baseUrl": base, "apiVersion": "v1"}),
    );
    for deployment in [&classic, &v1] {
        let answer = upstream
            .complete(deployment, json!({"messages": user("hello")}))
            .await;
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            format!("{CHAT_PREFIX}hello")
        );
        assert!(answer["prompt_filter_results"].is_array());
        let chunks = upstream
            .chunks(deployment, json!({"messages": user("a"), "stream": true}))
            .await;
        streamed(&chunks);
        assert!(
            chunks.iter().all(|c| c["id"] != json!("")),
            "the prompt-filter chunk is taken out: {chunks:?}"
        );
    }
    upstream.fake.push(Script::status(429));
    let error = upstream
        .call(
            &classic,
            Endpoint::ChatCompletions,
            json!({"messages": user("x")}),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(error.retry_after, Some(Duration::from_millis(1000)));
}
