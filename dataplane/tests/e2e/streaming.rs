//! The streaming contract: before the first content token a failure fails over unseen; after
//! it, the stream ends with an error chunk and no `[DONE]`, never a clean-looking truncation.

use fake_provider::{FakeProvider, Script};
use http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn stream_request() -> Value {
    json!({"model": "chat", "stream": true, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "one two"}]})
}

/// The `data:` payloads of an SSE body.
fn sse_events(answer: &Answer) -> Vec<String> {
    answer
        .text()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// `first` is tried before `second` (weight 0 goes last).
async fn two_deployments() -> (FakeProvider, TestGateway) {
    let fake = FakeProvider::start().await.unwrap();
    let deployments = [
        upstream("first", &fake.base_url(), 1),
        upstream("second", &fake.base_url(), 0),
    ];
    let gw = TestGateway::start(&config_with(&group("chat", &["chat"], &deployments, &[]))).await;
    (fake, gw)
}

#[tokio::test]
async fn failures_before_the_first_content_token_fail_over_unseen() {
    let (fake, gw) = two_deployments().await;
    let before_content = [
        Script::StreamErrorAfter { chunks: 0 },
        Script::StreamErrorAfter { chunks: 1 },
        Script::CutStreamAfter { chunks: 1 },
        Script::CutStreamAfter { chunks: 0 },
        Script::status(503),
    ];
    for script in before_content {
        fake.push(script.clone());
        let answer = gw.post("/v1/chat/completions", stream_request()).await;
        assert_eq!(answer.status, StatusCode::OK, "{script:?}");
        assert_eq!(answer.served_by(), ("second", "2"), "{script:?}");
        let events = sse_events(&answer);
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{script:?}"
        );
        assert!(
            !events.iter().any(|e| e.contains("\"error\"")),
            "{script:?}: the client never sees the failure"
        );
        assert_eq!(
            streamed_text(&events),
            format!("{}one two", fake_provider::CHAT_PREFIX),
            "{script:?}"
        );
    }
}

#[tokio::test]
async fn a_failure_after_content_ends_the_stream_with_an_error_chunk() {
    let (fake, gw) = two_deployments().await;
    // The role chunk, one word of content, then the connection breaks.
    fake.push(Script::CutStreamAfter { chunks: 2 });
    let cut = gw.post("/v1/chat/completions", stream_request()).await;
    assert_eq!(
        cut.status,
        StatusCode::OK,
        "the head was sent with the first content"
    );
    let events = sse_events(&cut);
    assert_eq!(events.len(), 3, "{events:?}");
    let last: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert_eq!(last["error"]["code"], "upstream_stream_error");
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "never a clean-looking end"
    );
    assert_eq!(
        fake.request_count(),
        1,
        "no fail-over after content reached the client"
    );
    let record = gw.decision(cut.header("x-modelgate-request-id")).await;
    assert_eq!(record["error_code"], "upstream_stream_error");

    // A provider's own error event after content passes through, and is recorded.
    fake.push(Script::StreamErrorAfter { chunks: 3 });
    let errored = gw.post("/v1/chat/completions", stream_request()).await;
    let events = sse_events(&errored);
    assert!(
        events.last().unwrap().starts_with("{\"error\""),
        "{events:?}"
    );
    let record = gw.decision(errored.header("x-modelgate-request-id")).await;
    assert_eq!(record["error_code"], "upstream_error_event");
}

#[tokio::test]
async fn a_policy_that_commits_at_the_head_relays_at_once_and_does_not_fail_over() {
    let fake = FakeProvider::start().await.unwrap();
    let idle = "      timeouts: {idle: 1s}\n      weight: 1\n";
    let deployments = [
        upstream_with("first", &fake.base_url(), idle),
        upstream("second", &fake.base_url(), 0),
    ];
    let gw = TestGateway::start(&config_with(&format!(
        "{}{}",
        group("chat", &["chat"], &deployments, &[]),
        policy("latency-first", "  streaming: {commit: headers}")
    )))
    .await;

    // The role chunk, then silence: under the default commit this fails over unseen (see
    // `a_stalled_stream_is_cut_by_the_idle_timeout`); here the client already has the head and
    // the role chunk, so the stall ends its stream with the error chunk instead.
    fake.push(Script::StallAfter { chunks: 1 });
    let stalled = gw.post("/v1/chat/completions", stream_request()).await;
    assert_eq!(stalled.status, StatusCode::OK);
    assert_eq!(stalled.served_by(), ("first", "1"));
    let events = sse_events(&stalled);
    assert!(events[0].contains("\"role\":\"assistant\""), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_error", "{events:?}");
    assert_eq!(
        fake.request_count(),
        1,
        "no fail-over once the head is sent"
    );

    // A failure before the head still fails over.
    fake.push(Script::status(503));
    let answer = gw.post("/v1/chat/completions", stream_request()).await;
    assert_eq!(answer.served_by(), ("second", "2"));
    assert_eq!(
        sse_events(&answer).last().map(String::as_str),
        Some("[DONE]")
    );
}

#[tokio::test]
async fn a_client_that_asked_for_usage_reads_the_calls_cost_in_the_usage_chunk() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start(&config_with(&priced_chat_group(&fake, 2.0))).await;
    let answer = gw.post("/v1/chat/completions", stream_request()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let usage_chunk: Value = sse_events(&answer)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk");
    let usage = &usage_chunk["usage"];
    let tokens =
        usage["prompt_tokens"].as_f64().unwrap() + usage["completion_tokens"].as_f64().unwrap();
    let cost = usage_chunk["modelgate"]["cost_usd"].as_f64().unwrap();
    assert!((cost - tokens * 2.0 / 1e6).abs() < 1e-12, "{usage_chunk}");
    assert_eq!(usage_chunk["modelgate"]["price_source"], "deployment");
    let record = gw.decision(answer.header("x-modelgate-request-id")).await;
    assert_eq!(record["cost_usd"].as_f64(), Some(cost));
}
