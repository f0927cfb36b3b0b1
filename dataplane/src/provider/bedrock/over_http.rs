//! The whole adapter over HTTP against the fake provider's Bedrock dialect, which verifies
//! SigV4 signatures independently: signing, URLs, event-stream decoding and errors end to end.

use std::time::Duration;

use bytes::Bytes;
use fake_provider::{BEDROCK_ACCESS_KEY_ID, BEDROCK_SECRET_ACCESS_KEY, CHAT_PREFIX, FakeProvider};
use futures_util::StreamExt;
use modelgate_crds::{ProviderKind, compiled::CompiledDeployment};
use serde_json::{Value, json};

use super::super::{
    AttemptTimeouts, Call, CallError, Endpoint, ErrorClass, HttpClients, UpstreamBody, registry,
};
use crate::request::JsonRequest;

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

fn deployment(fake: &FakeProvider, model: &str, credentials: Value) -> CompiledDeployment {
    let mut settings = json!({
        "id": "ns/group/bedrock", "name": "bedrock", "provider": "bedrock", "model": model,
        "baseUrl": format!("http://{}", fake.addr()), "region": "us-east-1",
        "weight": 1, "tags": [], "timeouts": {},
    });
    for (key, value) in credentials.as_object().unwrap() {
        settings[key] = value.clone();
    }
    serde_json::from_value(settings).unwrap()
}

fn signing(secret: &str) -> Value {
    json!({"aws": {"accessKeyId": BEDROCK_ACCESS_KEY_ID, "secretAccessKey": secret}})
}

/// What the client gets: the completion JSON, or the streamed SSE text.
enum Answer {
    Complete(Value),
    Stream(String, Option<CallError>),
}

async fn call(
    deployment: &CompiledDeployment,
    endpoint: Endpoint,
    body: Value,
) -> Result<Answer, CallError> {
    let stream = body["stream"] == json!(true);
    let request = JsonRequest::parse(Bytes::from(body.to_string())).unwrap();
    let clients = HttpClients::default();
    let call = Call {
        endpoint,
        request: &request,
        native: None,
        stream,
        deployment,
        http: clients.client(Duration::from_secs(5), true),
        timeouts: AttemptTimeouts {
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(10),
            connect: Duration::from_secs(5),
        },
        trace: None,
    };
    let provider = registry(ProviderKind::Bedrock);
    match provider.call(call).await? {
        UpstreamBody::Complete { body, .. } => {
            Ok(Answer::Complete(serde_json::from_slice(&body).unwrap()))
        }
        UpstreamBody::Native(_) => panic!("no native request was made"),
        UpstreamBody::Stream(mut chunks) => {
            let mut text = Vec::new();
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(bytes) => text.extend_from_slice(&bytes),
                    Err(error) => {
                        return Ok(Answer::Stream(
                            String::from_utf8(text).unwrap(),
                            Some(error),
                        ));
                    }
                }
            }
            Ok(Answer::Stream(String::from_utf8(text).unwrap(), None))
        }
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
           "max_tokens": 50, "temperature": 0.2})
}

#[tokio::test]
async fn a_sigv4_signed_conversation_is_accepted_and_answered() {
    let fake = FakeProvider::start().await.unwrap();
    let signed = deployment(&fake, MODEL, signing(BEDROCK_SECRET_ACCESS_KEY));
    let Answer::Complete(answer) = call(&signed, Endpoint::ChatCompletions, chat(false))
        .await
        .unwrap()
    else {
        panic!("a complete answer");
    };
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        format!("{CHAT_PREFIX}hi")
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let recorded = &fake.requests()[0];
    assert_eq!(
        recorded.path,
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );
    assert!(recorded.headers["authorization"].starts_with("AWS4-HMAC-SHA256 Credential="));
    assert_eq!(recorded.dialect, "bedrock");
}

#[tokio::test]
async fn a_signed_stream_decodes_text_and_tool_calls() {
    let fake = FakeProvider::start().await.unwrap();
    let signed = deployment(&fake, MODEL, signing(BEDROCK_SECRET_ACCESS_KEY));
    let Answer::Stream(text, None) = call(&signed, Endpoint::ChatCompletions, chat(true))
        .await
        .unwrap()
    else {
        panic!("a complete stream");
    };
    let content: String = sse_chunks(&text)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, format!("{CHAT_PREFIX}hi"));
    assert!(text.ends_with("data: [DONE]\n\n"));

    let mut with_tools = chat(true);
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
    let Answer::Stream(text, None) = call(&signed, Endpoint::ChatCompletions, with_tools)
        .await
        .unwrap()
    else {
        panic!("a complete stream");
    };
    let chunks = sse_chunks(&text);
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
}

#[tokio::test]
async fn a_mid_stream_exception_frame_fails_the_stream() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(fake_provider::Script::StreamErrorAfter { chunks: 2 });
    let signed = deployment(&fake, MODEL, signing(BEDROCK_SECRET_ACCESS_KEY));
    let Answer::Stream(text, Some(error)) = call(&signed, Endpoint::ChatCompletions, chat(true))
        .await
        .unwrap()
    else {
        panic!("a failed stream");
    };
    assert!(text.contains("Hello"), "the first word arrived: {text}");
    assert_eq!(error.class(), ErrorClass::Upstream);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_an_auth_error() {
    let fake = FakeProvider::start().await.unwrap();
    let wrong = deployment(&fake, MODEL, signing("not-the-secret"));
    let error = call(&wrong, Endpoint::ChatCompletions, chat(false))
        .await
        .err()
        .unwrap();
    assert_eq!(error.class(), ErrorClass::Auth);
}

#[tokio::test]
async fn a_bedrock_api_key_is_sent_as_a_bearer_token() {
    let fake = FakeProvider::start().await.unwrap();
    // The fake's OpenAI base URL (ending in `/v1`) serves Bedrock paths too.
    let keyed = deployment(
        &fake,
        MODEL,
        json!({"apiKey": "bedrock-api-key-fake", "baseUrl": fake.base_url()}),
    );
    assert!(matches!(
        call(&keyed, Endpoint::ChatCompletions, chat(false)).await,
        Ok(Answer::Complete(_))
    ));
    assert_eq!(
        fake.requests()[0].headers["authorization"],
        "Bearer bedrock-api-key-fake"
    );
}

#[tokio::test]
async fn embeddings_go_through_invoke_model() {
    let fake = FakeProvider::start().await.unwrap();
    let titan = deployment(
        &fake,
        "amazon.titan-embed-text-v2:0",
        signing(BEDROCK_SECRET_ACCESS_KEY),
    );
    let Answer::Complete(list) = call(
        &titan,
        Endpoint::Embeddings,
        json!({"model": "embed", "input": "hello world", "dimensions": 256}),
    )
    .await
    .unwrap() else {
        panic!("a complete answer");
    };
    assert_eq!(list["data"][0]["embedding"].as_array().unwrap().len(), 256);
    assert_eq!(list["usage"]["prompt_tokens"], 2);

    let cohere = deployment(
        &fake,
        "cohere.embed-english-v3",
        signing(BEDROCK_SECRET_ACCESS_KEY),
    );
    let Answer::Complete(list) = call(
        &cohere,
        Endpoint::Embeddings,
        json!({"model": "embed", "input": ["a", "b", "c"], "encoding_format": "base64"}),
    )
    .await
    .unwrap() else {
        panic!("a complete answer");
    };
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    assert!(list["data"][2]["embedding"].is_string());
}

fn sse_chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}
