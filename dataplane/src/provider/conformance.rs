//! The conformance suite: every translating provider runs the same cases over recorded wire
//! fixtures (`tests/fixtures/providers/<provider>/<case>.json`) and must match golden output. A
//! provider either has a fixture for every case in `CASES` or an entry in `SKIPS` saying why
//! not, so a new provider cannot quietly leave a case out.
//!
//! A fixture holds the client's OpenAI `request`, optionally `deployment` settings, and the
//! provider's `upstream` answer (`status`, `headers`, and `body` JSON, `sse` text, or Bedrock
//! `events`). Its `golden` member holds what the gateway must produce: the upstream `request`
//! (method, URL, non-credential headers, body) and the client's `response` (a completion, the
//! SSE `chunks`, or the classified `error`), or `rejected` when the gateway must refuse the
//! request before sending it. `UPDATE_GOLDEN=1 cargo test -p modelgate-dataplane --lib
//! conformance` rewrites the goldens; review the diff.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use modelgate_crds::{ProviderKind, compiled::CompiledDeployment};
use serde_json::{Map, Value, json};

use super::{CallError, Endpoint, Target, dialect, translated::StreamTranslator};
use crate::request::JsonRequest;

/// Every case a provider must cover.
pub const CASES: &[&str] = &[
    "chat_text",
    "chat_stream",
    "system_messages",
    "sampling_stop_max_tokens",
    "tools",
    "tools_parallel",
    "tools_stream",
    "tool_results",
    "json_object",
    "json_schema",
    "image_url",
    "image_base64",
    "usage_cached_reasoning",
    "finish_length",
    "finish_content_filter",
    "stream_error",
    "unsupported_parameter",
    "error_rate_limit",
    "error_overloaded",
    "error_auth",
    "error_invalid_request",
    "error_context_length",
    "error_content_policy",
    "embeddings",
];

/// The providers the suite runs (their fixture directory is their manifest name).
pub const PROVIDERS: &[ProviderKind] = &[
    ProviderKind::Azure,
    ProviderKind::Anthropic,
    ProviderKind::Bedrock,
    ProviderKind::Gemini,
    ProviderKind::Vertex,
    ProviderKind::Cohere,
    ProviderKind::Mistral,
    ProviderKind::Deepseek,
];

/// Cases a provider does not run, and why.
pub const SKIPS: &[(ProviderKind, &str, &str)] = &[
    (
        ProviderKind::Anthropic,
        "embeddings",
        "Anthropic has no embeddings API (the refusal is the fixture `embeddings_unsupported`)",
    ),
    (ProviderKind::Vertex, "system_messages", VERTEX_AS_GEMINI),
    (
        ProviderKind::Vertex,
        "sampling_stop_max_tokens",
        VERTEX_AS_GEMINI,
    ),
    (ProviderKind::Vertex, "tools_parallel", VERTEX_AS_GEMINI),
    (ProviderKind::Vertex, "tools_stream", VERTEX_AS_GEMINI),
    (ProviderKind::Vertex, "tool_results", VERTEX_AS_GEMINI),
    (ProviderKind::Vertex, "json_object", VERTEX_AS_GEMINI),
    (ProviderKind::Vertex, "json_schema", VERTEX_AS_GEMINI),
    (ProviderKind::Vertex, "image_url", VERTEX_AS_GEMINI),
    (ProviderKind::Vertex, "image_base64", VERTEX_AS_GEMINI),
    (
        ProviderKind::Vertex,
        "usage_cached_reasoning",
        VERTEX_AS_GEMINI,
    ),
    (ProviderKind::Vertex, "finish_length", VERTEX_AS_GEMINI),
    (
        ProviderKind::Vertex,
        "finish_content_filter",
        VERTEX_AS_GEMINI,
    ),
    (ProviderKind::Vertex, "stream_error", VERTEX_AS_GEMINI),
    (
        ProviderKind::Vertex,
        "unsupported_parameter",
        VERTEX_AS_GEMINI,
    ),
    (ProviderKind::Vertex, "error_overloaded", VERTEX_AS_GEMINI),
    (
        ProviderKind::Vertex,
        "error_invalid_request",
        VERTEX_AS_GEMINI,
    ),
    (
        ProviderKind::Vertex,
        "error_context_length",
        VERTEX_AS_GEMINI,
    ),
    (
        ProviderKind::Vertex,
        "error_content_policy",
        VERTEX_AS_GEMINI,
    ),
    (
        ProviderKind::Cohere,
        "finish_content_filter",
        "Cohere has no content-filter finish reason: a blocked prompt or answer is an error \
         (498 or a blocked-input 400, see error_content_policy*)",
    ),
    (
        ProviderKind::Mistral,
        "finish_content_filter",
        "Mistral's finish reasons are stop, length, model_length, error and tool_calls",
    ),
    (
        ProviderKind::Mistral,
        "error_content_policy",
        "Mistral's chat API documents no content-policy error (moderation is its own API)",
    ),
    (
        ProviderKind::Deepseek,
        "embeddings",
        "DeepSeek has no embeddings API (embeddings_unsupported.json shows the 400)",
    ),
];

/// Vertex's Gemini models run the Gemini dialect's translations unchanged; only URLs, auth and
/// embeddings differ, and those have Vertex fixtures of their own.
const VERTEX_AS_GEMINI: &str = "same translation as gemini, covered there";

/// Headers that carry credentials: never part of a golden.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/providers")
}

#[test]
fn every_provider_covers_every_case() {
    let mut failures = Vec::new();
    for &provider in PROVIDERS {
        let dir = fixtures_dir().join(provider.as_str());
        for case in CASES {
            let file = dir.join(format!("{case}.json"));
            let skipped = SKIPS.iter().any(|(p, c, _)| *p == provider && c == case);
            match (file.exists(), skipped) {
                (false, false) => failures.push(format!(
                    "{}: no fixture for case `{case}` and no SKIPS entry saying why",
                    provider.as_str()
                )),
                (true, true) => failures.push(format!(
                    "{}: case `{case}` has a fixture but is also in SKIPS",
                    provider.as_str()
                )),
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixtures_match_their_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut ran = 0;
    for &provider in PROVIDERS {
        let dir = fixtures_dir().join(provider.as_str());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|f| f.extension().is_some_and(|e| e == "json"));
        files.sort();
        for file in files {
            ran += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            let mut fixture: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let actual = run(provider, &fixture);
            if update {
                fixture["golden"] = actual;
                let pretty = serde_json::to_string_pretty(&fixture).unwrap() + "\n";
                std::fs::write(&file, pretty).unwrap();
            } else if fixture.get("golden") != Some(&actual) {
                failures.push(format!(
                    "{}: golden differs\n--- golden\n{}\n--- actual\n{}",
                    file.display(),
                    serde_json::to_string_pretty(&fixture["golden"]).unwrap(),
                    serde_json::to_string_pretty(&actual).unwrap()
                ));
            }
        }
    }
    assert!(
        ran > 0,
        "no fixtures found under {}",
        fixtures_dir().display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs one fixture through its provider's translations: what the gateway sends and answers.
fn run(provider: ProviderKind, fixture: &Value) -> Value {
    let dialect = dialect(provider).unwrap_or_else(|| panic!("no dialect for {provider:?}"));
    let endpoint = match fixture["endpoint"].as_str().unwrap_or("chat_completions") {
        "embeddings" => Endpoint::Embeddings,
        "images_generations" => Endpoint::ImageGenerations,
        _ => Endpoint::ChatCompletions,
    };
    let stream = fixture["request"]["stream"].as_bool() == Some(true);
    let request =
        JsonRequest::parse(Bytes::from(fixture["request"].to_string())).expect("request JSON");
    let deployment = deployment(provider, fixture.get("deployment"));
    let target = Target {
        endpoint,
        request: &request,
        native: None,
        stream,
        deployment: &deployment,
    };
    let upstream = match dialect.request(&target) {
        Ok(upstream) => upstream,
        Err(error) => return json!({"rejected": error_json(&error)}),
    };
    let sent = sent_json(&upstream);
    let answer = &fixture["upstream"];
    let status = StatusCode::from_u16(answer["status"].as_u64().unwrap_or(200) as u16).unwrap();
    let headers = header_map(&answer["headers"]);
    let body = upstream_bytes(answer);
    let response = if !status.is_success() {
        json!({"error": error_json(&dialect.error(status, &headers, &body))})
    } else if stream {
        stream_json(dialect.stream(&target), &body)
    } else {
        match dialect.response(&target, &headers, Bytes::from(body)) {
            Ok(translated) => {
                let mut value: Value = serde_json::from_slice(&translated.body).unwrap();
                normalise(&mut value);
                json!({"completion": value, "usage": translated.usage})
            }
            Err(error) => json!({"error": error_json(&error)}),
        }
    };
    json!({"request": sent, "response": response})
}

fn deployment(provider: ProviderKind, overrides: Option<&Value>) -> CompiledDeployment {
    let mut base = json!({
        "id": "conformance/group/deployment",
        "name": "deployment",
        "provider": provider,
        "model": "upstream-model",
        "apiKey": "sk-conformance-secret-key",
        "weight": 1,
        "tags": [],
        "timeouts": {},
    });
    if let Some(Value::Object(overrides)) = overrides {
        for (k, v) in overrides {
            base[k] = v.clone();
        }
    }
    serde_json::from_value(base).expect("deployment settings")
}

fn sent_json(request: &http::Request<Bytes>) -> Value {
    let headers: Map<String, Value> = request
        .headers()
        .iter()
        .filter(|(name, _)| !CREDENTIAL_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                json!(value.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    let body = serde_json::from_slice::<Value>(request.body())
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(request.body())));
    json!({
        "method": request.method().as_str(),
        "url": request.uri().to_string(),
        "headers": headers,
        "body": body,
    })
}

fn header_map(headers: &Value) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Value::Object(headers) = headers {
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value.as_str().unwrap_or_default()).unwrap(),
            );
        }
    }
    map
}

/// The upstream body: JSON, SSE text, or binary event-stream frames.
fn upstream_bytes(answer: &Value) -> Vec<u8> {
    if let Some(sse) = answer.get("sse").and_then(Value::as_str) {
        return sse.as_bytes().to_vec();
    }
    if let Some(Value::Array(events)) = answer.get("events") {
        return super::event_frames(events);
    }
    match answer.get("body") {
        Some(Value::String(text)) => text.as_bytes().to_vec(),
        Some(body) => body.to_string().into_bytes(),
        None => Vec::new(),
    }
}

/// Feeds the stream to the translator in small slices (so every event crosses a chunk boundary
/// somewhere) and returns the OpenAI chunks, or the error the client's stream would end with.
fn stream_json(translator: Option<Box<dyn StreamTranslator>>, body: &[u8]) -> Value {
    let mut out = Vec::new();
    let mut result = Ok(());
    match translator {
        None => out.extend_from_slice(body),
        Some(mut translator) => {
            for piece in body.chunks(7) {
                result = translator.feed(piece, &mut out);
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                result = translator.finish(&mut out);
            }
        }
    }
    let mut chunks: Vec<Value> = Vec::new();
    for line in String::from_utf8(out).unwrap().split("\n\n") {
        let Some(data) = line.trim().strip_prefix("data:") else {
            assert!(line.trim().is_empty(), "not an SSE data event: {line:?}");
            continue;
        };
        let mut chunk: Value = serde_json::from_str(data.trim()).unwrap_or(json!(data.trim()));
        normalise(&mut chunk);
        chunks.push(chunk);
    }
    match result {
        Ok(()) => json!({"chunks": chunks}),
        Err(error) => json!({"chunks": chunks, "error": error_json(&error)}),
    }
}

fn error_json(error: &CallError) -> Value {
    json!({
        "kind": error.kind.as_str(),
        "status": error.status.map(|s| s.as_u16()),
        "class": error.class().as_str(),
        "code": error.provider_code,
        "param": error.param,
        "message": error.message,
        "retry_after_ms": error.retry_after.map(|d| d.as_millis() as u64),
        "client_error": error.is_client_error(),
    })
}

/// Replaces what changes on every run (generated ids, clocks) with placeholders.
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match (key.as_str(), &*v) {
                    ("created", Value::Number(_)) => *v = json!(0),
                    ("id", Value::String(s)) if s.starts_with("chatcmpl-") => {
                        *v = json!("chatcmpl-<generated>");
                    }
                    ("id", Value::String(s)) if is_generated_call_id(s) => {
                        *v = json!("call_<generated>");
                    }
                    // A generated id carrying provider data after it (Gemini's thought
                    // signatures): only the generated part varies.
                    ("id", Value::String(s))
                        if s.len() > 29
                            && s.is_char_boundary(29)
                            && is_generated_call_id(&s[..29]) =>
                    {
                        *v = json!(format!("call_<generated>{}", &s[29..]));
                    }
                    _ => normalise(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn is_generated_call_id(id: &str) -> bool {
    id.strip_prefix("call_")
        .is_some_and(|rest| rest.len() == 24 && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}
