//! The spans of one finished request, in the GenAI semantic conventions: the server span, named
//! `{operation} {requested model}`, and a client span per attempt, named `{operation}
//! {upstream model}`, each with the ids the request path chose (the attempts' went to the
//! provider in `traceparent`).

use std::{borrow::Cow, sync::Arc, time::Duration};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::{
    telemetry::{Finished, finished::Attempt},
    trace::{AttemptSpan, RequestTrace},
};

/// `gen_ai.operation.name` of an endpoint.
pub(super) fn operation(endpoint: &str) -> &'static str {
    match endpoint {
        "embeddings" => "embeddings",
        "images_generations" => "generate_content",
        _ => "chat",
    }
}

/// The span of the attempt that served the request (else the last one made).
pub(super) fn served_span<'a>(request: &'a Finished<'a>) -> Option<&'a AttemptSpan> {
    request
        .attempts
        .iter()
        .rfind(|a| a.outcome == "ok")
        .and_then(|a| a.span)
        .or_else(|| request.attempts.iter().rev().find_map(|a| a.span))
}

pub(super) fn of(
    request: &Finished<'_>,
    trace: &RequestTrace,
    scope: &InstrumentationScope,
) -> Vec<SpanData> {
    let operation = operation(request.endpoint);
    let served = served_span(request);
    let mut spans = Vec::with_capacity(request.attempts.len() + 1);
    let made = request.attempts.iter().filter(|a| a.span.is_some());
    for (number, attempt) in made.enumerate() {
        if let Some(span) = attempt.span {
            let serving = served.is_some_and(|s| s.ids.span_id == span.ids.span_id);
            spans.push(attempt_span(
                request,
                trace,
                attempt,
                span,
                number + 1,
                serving,
                scope,
            ));
        }
    }
    let mut attributes = vec![
        KeyValue::new("gen_ai.operation.name", operation),
        KeyValue::new("gen_ai.request.model", request.request_model.to_owned()),
        KeyValue::new("http.response.status_code", i64::from(request.status)),
        KeyValue::new("modelgate.endpoint", request.endpoint),
        KeyValue::new("modelgate.strategy", request.strategy),
        KeyValue::new("modelgate.attempts", request.attempts.len() as i64),
        KeyValue::new("modelgate.stream", request.stream),
    ];
    if let Some(served) = served {
        attributes.push(KeyValue::new("gen_ai.provider.name", served.provider_name));
        attributes.push(KeyValue::new("gen_ai.response.model", served.model.clone()));
    }
    push_outcome(&mut attributes, request);
    push_caller(&mut attributes, request);
    if let Some(cache) = request.cache {
        attributes.push(KeyValue::new("modelgate.cache", cache));
    }
    if let Some(code) = request.error_code {
        attributes.push(KeyValue::new("error.type", code));
    }
    spans.push(SpanData {
        span_context: context(trace.server.trace_id, trace.server.span_id),
        parent_span_id: trace.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: trace.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(format!("{operation} {}", request.request_model)),
        start_time: request.started_at,
        end_time: request.started_at + Duration::from_secs_f64(request.seconds.max(0.0)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        // A server span is an error only when the gateway failed, not when the caller did.
        status: if request.status >= 500 {
            Status::error(request.error_code.unwrap_or("error"))
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    });
    spans
}

fn attempt_span(
    request: &Finished<'_>,
    trace: &RequestTrace,
    attempt: &Attempt<'_>,
    span: &AttemptSpan,
    number: usize,
    serving: bool,
    scope: &InstrumentationScope,
) -> SpanData {
    let operation = operation(request.endpoint);
    let mut attributes = vec![
        KeyValue::new("gen_ai.operation.name", operation),
        KeyValue::new("gen_ai.provider.name", span.provider_name),
        KeyValue::new("gen_ai.request.model", span.model.clone()),
        KeyValue::new("modelgate.attempt", number as i64),
        KeyValue::new("modelgate.deployment", attempt.deployment.to_owned()),
        KeyValue::new("modelgate.outcome", attempt.outcome),
    ];
    if let Some(server) = &span.server_address {
        attributes.push(KeyValue::new("server.address", server.clone()));
    }
    if let Some(status) = attempt.status {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    let failed = attempt.outcome != "ok";
    if failed {
        attributes.push(KeyValue::new("error.type", attempt.outcome));
    }
    if serving {
        attributes.push(KeyValue::new("gen_ai.response.model", span.model.clone()));
        push_outcome(&mut attributes, request);
    }
    SpanData {
        span_context: context(span.ids.trace_id, span.ids.span_id),
        parent_span_id: SpanId::from_bytes(trace.server.span_id),
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: Cow::Owned(format!("{operation} {}", span.model)),
        start_time: span.started,
        end_time: span.started + Duration::from_secs_f64(attempt.latency_ms.max(0.0) / 1000.0),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if failed {
            Status::error(attempt.outcome)
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

/// Usage, finish reasons and cost: what the serving call came to.
fn push_outcome(attributes: &mut Vec<KeyValue>, request: &Finished<'_>) {
    if request.input_tokens > 0 || request.output_tokens > 0 {
        attributes.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            request.input_tokens as i64,
        ));
        attributes.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            request.output_tokens as i64,
        ));
    }
    if !request.finish_reasons.is_empty() {
        attributes.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            opentelemetry::Value::Array(
                request
                    .finish_reasons
                    .iter()
                    .map(|r| opentelemetry::StringValue::from(r.clone()))
                    .collect::<Vec<_>>()
                    .into(),
            ),
        ));
    }
    if let Some(cost) = request.cost_usd {
        attributes.push(KeyValue::new("modelgate.cost_usd", cost));
    }
}

/// Who called: key, org, team, group and spend tags (all from the config, never the request).
fn push_caller(attributes: &mut Vec<KeyValue>, request: &Finished<'_>) {
    for (name, value) in [
        ("modelgate.key_id", request.key),
        ("modelgate.org", request.org),
        ("modelgate.team", request.team),
        ("modelgate.group", request.group),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            attributes.push(KeyValue::new(name, Arc::clone(value)));
        }
    }
    for (tag, value) in request.spend_tags {
        attributes.push(KeyValue::new(
            format!("modelgate.spend_tag.{tag}"),
            value.clone(),
        ));
    }
}

fn context(trace_id: [u8; 16], span_id: [u8; 8]) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}
