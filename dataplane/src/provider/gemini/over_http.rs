//! The Gemini and Vertex adapters over real HTTP against the fake provider's independent
//! implementation of both APIs: credentials, the token cache, thought signatures surviving a
//! round trip through the client, streams and embeddings, and Claude on Vertex (`rawPredict`).

use std::time::Duration;

use bytes::Bytes;
use fake_provider::{FakeProvider, Script};
use futures_util::StreamExt;
use modelgate_crds::{ProviderKind, compiled::CompiledDeployment};
use serde_json::{Value, json};

use crate::{
    provider::{
        AttemptTimeouts, Call, CallError, DEFAULT_CONNECT_TIMEOUT, Endpoint, ErrorClass,
        HttpClients, UpstreamBody, registry,
    },
    request::JsonRequest,
};

const KEY_FILE: &str =
    include_str!("../../../../tests/fixtures/google-auth/test-service-account.json");

fn deployment(provider: ProviderKind, fake: &FakeProvider, model: &str) -> CompiledDeployment {
    let key = match provider {
        ProviderKind::Vertex => {
            let mut key: Value = serde_json::from_str(KEY_FILE).unwrap();
            key["token_uri"] = json!(format!("http://{}/token", fake.addr()));
            key.to_string()
        }
        _ => "gemini-test-key".to_owned(),
    };
    serde_json::from_value(json!({
        "id": "test/group/google", "name": "google", "provider": provider, "model": model,
        "baseUrl": format!("http://{}", fake.addr()), "apiKey": key,
        "region": "us-central1", "project": "modelgate-test",
        "weight": 1, "tags": [], "timeouts": {},
    }))
    .unwrap()
}

/// One call; a stream is read to its end (its error, if any, is the result).
async fn call(
    deployment: &CompiledDeployment,
    endpoint: Endpoint,
    request: Value,
) -> Result<Value, CallError> {
    let stream = request["stream"].as_bool() == Some(true);
    let request = JsonRequest::parse(Bytes::from(request.to_string())).unwrap();
    let provider = registry(deployment.provider);
    let timeouts = AttemptTimeouts {
        first_byte: Duration::from_secs(5),
        idle: Duration::from_secs(5),
        connect: DEFAULT_CONNECT_TIMEOUT,
    };
    let call = Call {
        endpoint,
        request: &request,
        native: None,
        stream,
        deployment,
        http: HttpClients::default().client(DEFAULT_CONNECT_TIMEOUT, true),
        timeouts,
        trace: None,
    };
    match provider.call(call).await? {
        UpstreamBody::Complete { body, .. } => Ok(serde_json::from_slice(&body).unwrap()),
        UpstreamBody::Native(_) => panic!("no native request was made"),
        UpstreamBody::Stream(mut chunks) => {
            let mut text = String::new();
            while let Some(chunk) = chunks.next().await {
                text.push_str(std::str::from_utf8(&chunk?).unwrap());
            }
            Ok(json!(text))
        }
    }
}

fn weather_request(messages: Value) -> Value {
    json!({"model": "m", "messages": messages, "tools": [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
}

#[tokio::test]
async fn a_thought_signature_survives_the_round_trip_through_the_client() {
    let fake = FakeProvider::start().await.unwrap();
    let gemini = deployment(ProviderKind::Gemini, &fake, "gemini-2.5-flash");
    let question = json!({"role": "user", "content": "Weather in Paris?"});
    let first = call(
        &gemini,
        Endpoint::ChatCompletions,
        weather_request(json!([question])),
    )
    .await
    .unwrap();
    let message = &first["choices"][0]["message"];
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let id = message["tool_calls"][0]["id"].as_str().unwrap();
    assert!(id.contains("__ts__"), "the signature rides in the id: {id}");

    // The client sends the history back; the fake refuses a model turn whose first call lacks
    // the signature it issued.
    let history =
        json!([question, message, {"role": "tool", "tool_call_id": id, "content": "21C"}]);
    let second = call(&gemini, Endpoint::ChatCompletions, weather_request(history))
        .await
        .unwrap();
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "tool result received: 21C"
    );
    let sent = &fake.requests()[1];
    assert_eq!(sent.headers["x-goog-api-key"], "gemini-test-key");
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
}

#[tokio::test]
async fn vertex_fetches_one_token_for_many_calls_and_streams() {
    let fake = FakeProvider::start().await.unwrap();
    let vertex = deployment(ProviderKind::Vertex, &fake, "gemini-2.5-flash");
    let hello = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    let answer = call(&vertex, Endpoint::ChatCompletions, hello.clone())
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        format!("{}hello", fake_provider::CHAT_PREFIX)
    );
    let mut streamed = hello.clone();
    streamed["stream"] = json!(true);
    let text = call(&vertex, Endpoint::ChatCompletions, streamed)
        .await
        .unwrap();
    let text = text.as_str().unwrap();
    assert!(text.contains("\"content\":\"hello\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let embeddings = call(
        &deployment(ProviderKind::Vertex, &fake, "text-embedding-005"),
        Endpoint::Embeddings,
        json!({"model": "e", "input": ["a", "b"], "dimensions": 4}),
    )
    .await
    .unwrap();
    assert_eq!(
        embeddings["data"][1]["embedding"].as_array().unwrap().len(),
        4
    );

    let requests = fake.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths.iter().filter(|p| **p == "/token").count(),
        1,
        "one token for every call: {paths:?}"
    );
    let model_call = requests.iter().find(|r| r.path != "/token").unwrap();
    assert!(model_call.headers["authorization"].starts_with("Bearer ya29.fake-"));
    assert_eq!(
        model_call.path,
        "/v1/projects/modelgate-test/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
}

#[tokio::test]
async fn refused_credentials_are_auth_errors() {
    let fake = FakeProvider::start().await.unwrap();
    let hello = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    let mut keyless = deployment(ProviderKind::Gemini, &fake, "gemini-2.5-flash");
    keyless.api_key = None;
    let error = call(&keyless, Endpoint::ChatCompletions, hello.clone())
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Auth);

    // A key the token endpoint does not know (its signature does not verify).
    let mut stranger = deployment(ProviderKind::Vertex, &fake, "gemini-2.5-flash");
    let mut key: Value = serde_json::from_str(stranger.api_key.as_ref().unwrap().expose()).unwrap();
    key["client_email"] = json!("someone-else@example.iam.gserviceaccount.com");
    stranger.api_key = Some(modelgate_crds::compiled::Sensitive::new(key.to_string()));
    let error = call(&stranger, Endpoint::ChatCompletions, hello)
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Auth);
    assert_eq!(
        error.message,
        "vertex: the token endpoint refused the service account (invalid_grant)"
    );
}

#[tokio::test]
async fn scripted_failures_arrive_classified() {
    let fake = FakeProvider::start().await.unwrap();
    let gemini = deployment(ProviderKind::Gemini, &fake, "gemini-2.5-flash");
    let hello = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "one two three"}]});

    fake.push(Script::status(429));
    let limited = call(&gemini, Endpoint::ChatCompletions, hello.clone())
        .await
        .unwrap_err();
    assert_eq!(limited.class(), ErrorClass::RateLimit);
    assert_eq!(limited.retry_after, Some(Duration::from_secs(1)));

    fake.push(Script::StreamErrorAfter { chunks: 1 });
    let broken = call(&gemini, Endpoint::ChatCompletions, hello.clone())
        .await
        .unwrap_err();
    assert_eq!(broken.class(), ErrorClass::Upstream);

    fake.push(Script::CutStreamAfter { chunks: 2 });
    assert!(
        call(&gemini, Endpoint::ChatCompletions, hello)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn claude_on_vertex_completes_streams_and_drops_a_refused_token() {
    let fake = FakeProvider::start().await.unwrap();
    let claude = deployment(ProviderKind::Vertex, &fake, "claude-sonnet-4-5@20250929");
    let hello = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    let answer = call(&claude, Endpoint::ChatCompletions, hello.clone())
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        format!("{}hello", fake_provider::CHAT_PREFIX)
    );
    assert_eq!(answer["model"], "claude-sonnet-4-5@20250929");
    let mut streamed = hello.clone();
    streamed["stream"] = json!(true);
    let text = call(&claude, Endpoint::ChatCompletions, streamed)
        .await
        .unwrap();
    let text = text.as_str().unwrap();
    assert!(text.contains("\"content\":\"hello\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let mut json_mode = hello.clone();
    json_mode["response_format"] = json!({"type": "json_object"});
    let answer = call(&claude, Endpoint::ChatCompletions, json_mode)
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        r#"{"answer":"fake"}"#
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    let requests = fake.requests();
    let model_call = requests.iter().find(|r| r.path != "/token").unwrap();
    assert_eq!(
        model_call.path,
        "/v1/projects/modelgate-test/locations/us-central1/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    );
    assert_eq!(model_call.body["anthropic_version"], "vertex-2023-10-16");
    assert!(model_call.body.get("model").is_none());
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with(":streamRawPredict"))
    );
    let tokens = |fake: &FakeProvider| {
        fake.requests()
            .iter()
            .filter(|r| r.path == "/token")
            .count()
    };
    assert_eq!(tokens(&fake), 1, "one token for every call");

    // Vertex refuses the token (revoked): the next call fetches a new one.
    fake.push(Script::status(401));
    let refused = call(&claude, Endpoint::ChatCompletions, hello.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Auth);
    call(&claude, Endpoint::ChatCompletions, hello)
        .await
        .unwrap();
    assert_eq!(tokens(&fake), 2, "the refused token was dropped");
}

#[tokio::test]
async fn large_embedding_requests_are_split_and_shortened_vectors_normalised() {
    let fake = FakeProvider::start().await.unwrap();
    let inputs: Vec<String> = (0..150).map(|n| format!("text {n}")).collect();
    let request = json!({"model": "e", "input": inputs, "dimensions": 4});
    let gemini = deployment(ProviderKind::Gemini, &fake, "gemini-embedding-001");
    let answer = call(&gemini, Endpoint::Embeddings, request.clone())
        .await
        .unwrap();
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 150);
    for (n, item) in data.iter().enumerate() {
        assert_eq!(item["index"], n);
        let vector: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "input {n}: norm {norm}");
    }
    let batches: Vec<usize> = fake
        .requests()
        .iter()
        .map(|r| r.body["requests"].as_array().unwrap().len())
        .collect();
    assert_eq!(batches.iter().sum::<usize>(), 150);
    assert!(batches.iter().all(|n| *n <= 100), "{batches:?}");

    // `gemini-embedding-001` on Vertex embeds one text per `predict`.
    fake.reset();
    let vertex = deployment(ProviderKind::Vertex, &fake, "gemini-embedding-001");
    let few = json!({"model": "e", "input": ["a", "b", "c"]});
    let answer = call(&vertex, Endpoint::Embeddings, few).await.unwrap();
    assert_eq!(answer["data"].as_array().unwrap().len(), 3);
    let predicts = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(":predict"))
        .count();
    assert_eq!(predicts, 3);
}
