//! OpenTelemetry export into a real Collector (OTLP/HTTP receiver, file exporter): the spans of a
//! request with the GenAI semantic conventions, the ids the providers were sent in
//! `traceparent`, and the GenAI client metrics.

use std::time::Duration;

use fake_provider::{FakeProvider, Script};
use http::StatusCode;
use modelgate_dataplane::telemetry::OtelOptions;
use serde_json::{Value, json};
use testbin::otelcol::Collector;

use crate::support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Every span the collector received, flattened, with its resource's attributes.
fn spans(collector: &Collector) -> Vec<(Value, Value)> {
    collector
        .received()
        .iter()
        .filter_map(|request| request["resourceSpans"].as_array().cloned())
        .flatten()
        .flat_map(|resource| {
            let attributes = resource["resource"]["attributes"].clone();
            resource["scopeSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
                .map(move |span| (span, attributes.clone()))
        })
        .collect()
}

/// The metric names the collector received.
fn metric_names(collector: &Collector) -> Vec<String> {
    collector
        .received()
        .iter()
        .filter_map(|request| request["resourceMetrics"].as_array().cloned())
        .flatten()
        .flat_map(|resource| {
            resource["scopeMetrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|scope| scope["metrics"].as_array().cloned().unwrap_or_default())
        .filter_map(|metric| metric["name"].as_str().map(str::to_owned))
        .collect()
}

/// An attribute's value as OTLP/JSON writes it (`{"stringValue": ...}` and the like), unwrapped.
fn attribute(attributes: &Value, key: &str) -> Value {
    let Some(found) = attributes
        .as_array()
        .and_then(|all| all.iter().find(|a| a["key"] == key))
    else {
        return Value::Null;
    };
    let value = &found["value"];
    if let Some(s) = value.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = value.get("intValue") {
        // OTLP/JSON writes 64-bit integers as strings.
        return i
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .map_or(i.clone(), Value::from);
    }
    if let Some(values) = value.pointer("/arrayValue/values") {
        return Value::Array(
            values
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["stringValue"].clone())
                .collect(),
        );
    }
    value
        .get("doubleValue")
        .or(value.get("boolValue"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_streamed_call_that_fell_back_arrives_as_one_trace_with_an_attempt_span_each() {
    let collector = Collector::start().await;
    let fake = FakeProvider::start().await.unwrap();
    let deployments = [
        upstream("first", &fake.base_url(), 1),
        upstream("second", &fake.base_url(), 0),
    ];
    let config = config_with(&format!(
        "{}{}",
        group("chat", &["chat"], &deployments, &[]),
        policy("acme", "  orgs: [acme]\n  spendTags: [{key: stage}]")
    ));
    let endpoint = collector.endpoint();
    let gw = TestGateway::start_custom(&config, |options| {
        options.otel = Some(OtelOptions {
            batch_delay: Duration::from_millis(50),
            metrics_interval: Duration::from_millis(200),
            ..OtelOptions::new(endpoint)
        });
    })
    .await;

    fake.push(Script::status(503));
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let answer = gw
        .post_with(
            KEY,
            &[
                ("traceparent", traceparent.as_str()),
                ("x-modelgate-spend-tags", "stage=answer"),
            ],
            json!({"model": "chat", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "one two"}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.served_by(), ("second", "2"));

    let mut received = Vec::new();
    eventually("the request's three spans at the collector", || {
        received = spans(&collector);
        std::future::ready(received.len() >= 3)
    })
    .await;
    assert_eq!(received.len(), 3, "{received:#?}\n{}", collector.log());
    let server = received
        .iter()
        .find(|(span, _)| span["kind"] == 2)
        .map(|(span, resource)| {
            assert_eq!(attribute(resource, "service.name"), "modelgate");
            span
        })
        .expect("a server span");
    let mut attempts: Vec<&Value> = received
        .iter()
        .map(|(span, _)| span)
        .filter(|span| span["kind"] == 3)
        .collect();
    attempts.sort_by_key(|span| attribute(&span["attributes"], "modelgate.attempt").as_i64());
    assert_eq!(attempts.len(), 2);

    // One trace: the client's, the server span its child, the attempts the server span's.
    for span in received.iter().map(|(span, _)| span) {
        assert_eq!(span["traceId"], CLIENT_TRACE);
    }
    assert_eq!(server["parentSpanId"], CLIENT_SPAN);
    assert_eq!(server["name"], "chat chat");
    for attempt in &attempts {
        assert_eq!(attempt["parentSpanId"], server["spanId"]);
    }
    // Each provider call carried its attempt's span as the parent.
    let sent: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.headers["traceparent"].clone())
        .collect();
    let expected: Vec<String> = attempts
        .iter()
        .map(|a| format!("00-{CLIENT_TRACE}-{}-01", a["spanId"].as_str().unwrap()))
        .collect();
    assert_eq!(sent, expected);

    let usage = answer.usage();
    let server_attributes = &server["attributes"];
    for (key, want) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("openai_compatible")),
        ("gen_ai.request.model", json!("chat")),
        ("gen_ai.response.model", json!("upstream-second")),
        ("gen_ai.usage.input_tokens", usage["prompt_tokens"].clone()),
        (
            "gen_ai.usage.output_tokens",
            usage["completion_tokens"].clone(),
        ),
        ("gen_ai.response.finish_reasons", json!(["stop"])),
        ("http.response.status_code", json!(200)),
        ("modelgate.strategy", json!("simple-shuffle")),
        // The test gateway runs without the response cache.
        ("modelgate.cache", json!("bypass")),
        ("modelgate.key_id", json!("default/e2e")),
        ("modelgate.org", json!("acme")),
        ("modelgate.group", json!("chat")),
        ("modelgate.stream", json!(true)),
        ("modelgate.spend_tag.stage", json!("answer")),
    ] {
        assert_eq!(attribute(server_attributes, key), want, "server span {key}");
    }
    assert!(attribute(server_attributes, "modelgate.cost_usd").is_number());
    assert_eq!(attribute(server_attributes, "error.type"), Value::Null);

    let (failed, served) = (&attempts[0]["attributes"], &attempts[1]["attributes"]);
    for (key, want_failed, want_served) in [
        ("modelgate.attempt", json!(1), json!(2)),
        (
            "gen_ai.request.model",
            json!("upstream-first"),
            json!("upstream-second"),
        ),
        (
            "gen_ai.provider.name",
            json!("openai_compatible"),
            json!("openai_compatible"),
        ),
        ("server.address", json!("127.0.0.1"), json!("127.0.0.1")),
        ("http.response.status_code", json!(503), json!(200)),
        ("error.type", json!("status"), Value::Null),
        (
            "gen_ai.response.model",
            Value::Null,
            json!("upstream-second"),
        ),
        (
            "gen_ai.response.finish_reasons",
            Value::Null,
            json!(["stop"]),
        ),
    ] {
        assert_eq!(attribute(failed, key), want_failed, "first attempt {key}");
        assert_eq!(attribute(served, key), want_served, "second attempt {key}");
    }
    assert_eq!(
        attempts[0]["status"]["code"], 2,
        "the failed attempt is an error"
    );

    eventually("the GenAI client metrics at the collector", || {
        let names = metric_names(&collector);
        std::future::ready(
            names.iter().any(|n| n == "gen_ai.client.token.usage")
                && names
                    .iter()
                    .any(|n| n == "gen_ai.client.operation.duration"),
        )
    })
    .await;
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced_and_providers_get_no_traceparent() {
    let fake = FakeProvider::start().await.unwrap();
    let config = config_with(&group(
        "chat",
        &["chat"],
        &[upstream("a", &fake.base_url(), 1)],
        &[],
    ));
    let gw = TestGateway::start(&config).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let answer = gw
        .post_with(KEY, &[("traceparent", traceparent.as_str())], chat("chat"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(!fake.requests()[0].headers.contains_key("traceparent"));
}
