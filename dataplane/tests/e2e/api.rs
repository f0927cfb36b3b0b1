//! The OpenAI surface end to end: auth and error codes, forwarding, headers, fallback, streaming
//! and the decision log, through real HTTP to an in-process fake provider.

use bytes::Bytes;
use fake_provider::{FakeProvider, Script};
use http::StatusCode;
use serde_json::json;

use crate::support::*;

/// The group `chat` on one fake; the test key is in team `ml`, which a policy declares.
async fn one_upstream() -> (FakeProvider, TestGateway) {
    let fake = FakeProvider::start().await.unwrap();
    let config = config_with(&format!(
        "{}{}",
        group(
            "chat",
            &["gpt-4o-mini", "chat"],
            &[upstream("a", &fake.base_url(), 1)],
            &[],
        ),
        policy("ml", "  teams: [ml]")
    ))
    .replace("  org: acme\n", "  org: acme\n  team: ml\n");
    (fake, TestGateway::start(&config).await)
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let (_fake, gw) = one_upstream().await;
    let missing = gw.post_as("/v1/chat/completions", None, chat("chat")).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_api_key")
    );
    let unknown = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-not-a-real-key-000"),
            chat("chat"),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_api_key")
    );
    assert_eq!(unknown.json()["error"]["type"], "authentication_error");
    assert!(
        !unknown.text().contains("sk-mg-not-a-real-key"),
        "the key is never echoed"
    );
    let models = gw.get(gw.url("/v1/models"), None).await;
    assert_eq!(models.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_key_stops_working_when_it_expires() {
    let fake = FakeProvider::start().await.unwrap();
    // Expiry is kept in whole seconds: at least two full seconds from now, so the start of the
    // gateway never eats the key's lifetime whatever the fraction of the current second.
    let expires = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 3).unwrap();
    let config = config_with(&group(
        "chat",
        &["chat"],
        &[upstream("a", &fake.base_url(), 1)],
        &[],
    ))
    .replace(
        "  org: acme\n",
        &format!("  org: acme\n  expiresAt: \"{expires}\"\n"),
    );
    let gw = TestGateway::start(&config).await;
    assert_eq!(
        gw.post("/v1/chat/completions", chat("chat")).await.status,
        StatusCode::OK
    );
    eventually("the key to expire", || async {
        gw.post("/v1/chat/completions", chat("chat")).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    let expired = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        (expired.status, expired.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "key_expired")
    );
}

#[tokio::test]
async fn unknown_and_forbidden_models_and_malformed_bodies() {
    let fake = FakeProvider::start().await.unwrap();
    let config = chat_and_mock(&fake, "secret-model")
        .replace("  org: acme\n", "  org: acme\n  allowedModels: [chat]\n");
    let gw = TestGateway::start(&config).await;

    let unknown = gw.post("/v1/chat/completions", chat("gpt-9")).await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (StatusCode::NOT_FOUND, "model_not_found")
    );
    assert_eq!(unknown.json()["error"]["param"], "model");
    let forbidden = gw.post("/v1/chat/completions", chat("secret-model")).await;
    assert_eq!(
        (forbidden.status, forbidden.error_code().as_str()),
        (StatusCode::FORBIDDEN, "model_not_allowed")
    );

    let not_json = gw.post_bytes(Bytes::from_static(b"{\"model\": ")).await;
    assert_eq!(
        (not_json.status, not_json.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let array = gw.post_bytes(Bytes::from_static(b"[1]")).await;
    assert_eq!(array.error_code(), "invalid_json");
    let no_model = gw
        .post("/v1/chat/completions", json!({"messages": []}))
        .await;
    assert_eq!(
        (no_model.status, no_model.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let model_not_string = gw.post("/v1/chat/completions", json!({"model": 7})).await;
    assert_eq!(model_not_string.status, StatusCode::BAD_REQUEST);
    let bad_extension = gw
        .post(
            "/v1/chat/completions",
            json!({"model": "chat", "modelgate": {"nope": 1}}),
        )
        .await;
    assert_eq!(
        (
            bad_extension.status,
            bad_extension.json()["error"]["param"].as_str()
        ),
        (StatusCode::BAD_REQUEST, Some("modelgate"))
    );
    let huge = gw
        .post_bytes(Bytes::from(vec![b' '; 2 * 1024 * 1024]))
        .await;
    assert_eq!(
        (huge.status, huge.error_code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    );
    let route = gw.post("/v1/nope", chat("chat")).await;
    assert_eq!(
        (route.status, route.error_code().as_str()),
        (StatusCode::NOT_FOUND, "unknown_route")
    );
    let method = gw.get(gw.url("/v1/chat/completions"), Some(KEY)).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        fake.request_count(),
        0,
        "no rejected request reached the provider"
    );

    let models = gw.get(gw.url("/v1/models"), Some(KEY)).await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["chat"], "only the models the key may use");
    assert_eq!(
        gw.get(gw.url("/v1/models/chat"), Some(KEY)).await.json()["id"],
        "chat"
    );
    assert_eq!(
        gw.get(gw.url("/v1/models/secret-model"), Some(KEY))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn forwards_the_body_with_only_model_replaced_and_no_client_secrets() {
    let (fake, gw) = one_upstream().await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"h\u00e9"}],"temperature":0.70,"modelgate":{"metadata":{"team":"x"}},"custom":{"a":[1, 2.50]}}"#;
    let answer = gw.post_bytes(Bytes::from_static(body.as_bytes())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let seen = &fake.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body["model"], "upstream-a");
    assert!(seen.body.get("modelgate").is_none());
    assert_eq!(seen.body["custom"], json!({"a": [1, 2.5]}));
    assert_eq!(
        seen.headers["authorization"],
        "Bearer sk-upstream-canary-0001"
    );
    assert!(
        seen.headers.values().all(|v| !v.contains(KEY)),
        "the virtual key never goes upstream"
    );
    let answer_body = answer.json();
    assert!(
        answer_body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .ends_with("hé")
    );
    assert!(!answer.text().contains("sk-upstream-canary"));
    assert_eq!(answer.header("x-modelgate-routed-model"), "chat");
    assert_eq!(answer.header("x-modelgate-provider"), "openai-compatible");
    assert_eq!(answer.header("x-modelgate-deployment"), "a");
    assert_eq!(answer.header("x-modelgate-attempts"), "1");
    assert!(answer.header("x-modelgate-request-id").starts_with("req_"));
}

#[tokio::test]
async fn embeddings_and_images_are_forwarded_too() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}",
        group(
            "embed",
            &["text-embedding-3-small"],
            &[upstream("e", &fake.base_url(), 1)],
            &[]
        ),
        group(
            "img",
            &["gpt-image-1"],
            &[upstream("i", &fake.base_url(), 1)],
            &[]
        )
    );
    let gw = TestGateway::start(&config_with(&groups)).await;
    let embeddings = gw
        .post(
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 4}),
        )
        .await;
    assert_eq!(embeddings.status, StatusCode::OK);
    assert_eq!(
        embeddings.json()["data"][1]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let images = gw
        .post(
            "/v1/images/generations",
            json!({"model": "gpt-image-1", "prompt": "otter"}),
        )
        .await;
    assert_eq!(images.status, StatusCode::OK);
    assert!(images.json()["data"][0]["b64_json"].is_string());
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/v1/embeddings", "/v1/images/generations"]);
    let decision = gw
        .decision(embeddings.header("x-modelgate-request-id"))
        .await;
    assert_eq!(decision["usage"]["prompt_tokens"], 2);
}

#[tokio::test]
async fn falls_back_on_connect_errors_and_5xx_and_reports_the_chain_when_all_fail() {
    let fake = FakeProvider::start().await.unwrap();
    let dead = dead_url();
    // weight 0 pins the order: the dead deployment first, then the fake, then the backup group.
    let groups = format!(
        "{}{}",
        group(
            "chat",
            &["chat"],
            &[
                upstream("dead", &dead.url, 1),
                upstream("live", &fake.base_url(), 0)
            ],
            &["backup"]
        ),
        group(
            "backup",
            &["backup"],
            &[upstream("spare", &fake.base_url(), 1)],
            &[]
        )
    );
    let gw = TestGateway::start(&config_with(&groups)).await;

    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-modelgate-deployment"), "live");
    assert_eq!(answer.header("x-modelgate-attempts"), "2");

    fake.push(Script::status(503));
    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        (
            answer.header("x-modelgate-routed-model"),
            answer.header("x-modelgate-deployment")
        ),
        ("backup", "spare")
    );
    assert_eq!(answer.header("x-modelgate-attempts"), "3");
    let decision = gw.decision(answer.header("x-modelgate-request-id")).await;
    let outcomes: Vec<&str> = decision["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["connect", "status", "ok"]);
    assert_eq!(
        decision["plan"],
        json!([
            "default/chat/dead",
            "default/chat/live",
            "default/backup/spare"
        ])
    );

    fake.push(Script::status(500));
    let no_fallbacks = gw
        .post(
            "/v1/chat/completions",
            json!({"model": "chat", "messages": [], "modelgate": {"fallbacks": false}}),
        )
        .await;
    assert_eq!(no_fallbacks.status, StatusCode::BAD_GATEWAY);

    fake.push(Script::status(500));
    fake.push(Script::Reset);
    let failed = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        (failed.status, failed.error_code().as_str()),
        (StatusCode::BAD_GATEWAY, "all_deployments_failed")
    );
    let chain = failed.header("x-modelgate-fallback-chain");
    let links: Vec<&str> = chain.split(", ").collect();
    assert_eq!(links.len(), 3, "{chain}");
    assert!(
        links[0].starts_with("default/chat/dead;connect;-;"),
        "{chain}"
    );
    assert!(
        links[1].starts_with("default/chat/live;status;500;"),
        "{chain}"
    );
    assert!(
        links[2].starts_with("default/backup/spare;protocol;-;"),
        "{chain}"
    );
    assert_eq!(failed.header("x-modelgate-attempts"), "3");
}

#[tokio::test]
async fn a_malformed_answer_is_a_failed_attempt_not_a_response() {
    let fake = FakeProvider::start().await.unwrap();
    let deployments = [
        upstream("first", &fake.base_url(), 1),
        upstream("second", &fake.base_url(), 0),
    ];
    let gw = TestGateway::start(&config_with(&group("chat", &["chat"], &deployments, &[]))).await;
    fake.push(Script::MalformedJson);
    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.served_by(), ("second", "2"));
    assert!(
        answer.json()["choices"].is_array(),
        "the client gets a well-formed answer"
    );
    let decision = gw.decision(answer.header("x-modelgate-request-id")).await;
    let outcomes: Vec<&str> = decision["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["protocol", "ok"]);
}

#[tokio::test]
async fn the_callers_own_errors_come_back_without_retry() {
    let (fake, gw) = one_upstream().await;
    fake.push(Script::Status {
        status: 400,
        body: Some(json!({"error": {"message": "This model's maximum context length is 8 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})),
        retry_after: None,
    });
    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "context_length_exceeded");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length")
    );
    assert_eq!(fake.request_count(), 1, "not retried");

    fake.push(Script::status(401));
    let auth = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        auth.status,
        StatusCode::BAD_GATEWAY,
        "an upstream auth failure is ours, not the caller's"
    );
    assert!(!auth.text().contains("invalid_api_key"));
}

fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn streams_pass_through_with_usage_and_ttft_recorded() {
    let (_fake, gw) = one_upstream().await;
    let request = json!({"model": "chat", "stream": true, "stream_options": {"include_usage": true},
                         "messages": [{"role": "user", "content": "one two"}]});
    let answer = gw.post("/v1/chat/completions", request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "text/event-stream");
    let events = sse_data(&answer.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let decision = gw.decision(answer.header("x-modelgate-request-id")).await;
    assert!(decision["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(decision["ttft_ms"].as_f64().is_some());
    assert_eq!(decision["stream"], true);
}

#[tokio::test]
async fn every_request_gets_one_decision_record() {
    let (_fake, gw) = one_upstream().await;
    let ok = gw
        .post("/v1/chat/completions", json!({"model": "gpt-4o-mini", "messages": [], "modelgate": {"metadata": {"run": "42"}}}))
        .await;
    let not_found = gw.post("/v1/chat/completions", chat("gpt-9")).await;
    let ok_record = gw.decision(ok.header("x-modelgate-request-id")).await;
    assert_eq!(ok_record["key_id"], "default/e2e");
    assert_eq!(
        (ok_record["org"].as_str(), ok_record["team"].as_str()),
        (Some("acme"), Some("ml"))
    );
    assert_eq!(
        (ok_record["model"].as_str(), ok_record["group"].as_str()),
        (Some("gpt-4o-mini"), Some("chat"))
    );
    assert_eq!(ok_record["strategy"], "simple-shuffle");
    assert_eq!(ok_record["attempts"][0]["provider"], "openai-compatible");
    assert_eq!(ok_record["attempts"][0]["status"], 200);
    assert!(ok_record["attempts"][0]["latency_ms"].as_f64().is_some());
    assert_eq!(ok_record["metadata"]["run"], "42");
    assert!(ok_record["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let missing = gw
        .decision(not_found.header("x-modelgate-request-id"))
        .await;
    assert_eq!(
        (missing["status"].as_u64(), missing["error_code"].as_str()),
        (Some(404), Some("model_not_found"))
    );
    let log = std::fs::read_to_string(&gw.decision_log).unwrap();
    assert!(
        !log.contains(KEY) && !log.contains("sk-upstream-canary"),
        "no key material in the log"
    );
}

#[tokio::test]
async fn admin_endpoints_are_only_on_the_admin_listener() {
    let (_fake, gw) = one_upstream().await;
    for path in ["/metrics", "/healthz", "/readyz", "/config_dump"] {
        let public = gw.get(gw.url(path), Some(KEY)).await;
        assert_eq!(
            public.status,
            StatusCode::NOT_FOUND,
            "{path} on the public listener"
        );
    }
    assert_eq!(
        gw.get(gw.admin_url("/healthz"), None).await.status,
        StatusCode::OK
    );
    let metrics = gw.get(gw.admin_url("/metrics"), None).await.text();
    assert!(
        metrics.contains("modelgate_config_reloads_total"),
        "{metrics}"
    );
    assert_eq!(
        gw.get(gw.admin_url("/config_dump"), None).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Every route in the table says whether it needs a key, and does what it says; spellings that
/// only look like a route are no route at all (the auth decision and the route decision agree).
#[tokio::test]
async fn every_route_demands_what_the_route_table_says() {
    let (fake, gw) = one_upstream().await;
    for (method, path, needs_key) in modelgate_dataplane::api::ROUTES {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let url = gw.url(&path.replace("{model}", "chat"));
        let answer = gw
            .send(
                method,
                url,
                None,
                bytes::Bytes::from_static(b"{\"model\":\"chat\"}"),
            )
            .await;
        if *needs_key {
            assert_eq!(
                (answer.status, answer.error_code().as_str()),
                (StatusCode::UNAUTHORIZED, "invalid_api_key"),
                "{path}"
            );
        } else {
            assert_eq!(answer.status, StatusCode::OK, "{path}");
        }
    }
    let keyless: Vec<&str> = modelgate_dataplane::api::ROUTES
        .iter()
        .filter(|(_, _, needs_key)| !needs_key)
        .map(|(_, path, _)| *path)
        .collect();
    assert_eq!(
        keyless,
        ["/api/public/models"],
        "only the public catalog is keyless"
    );
    for path in [
        "//v1/chat/completions",
        "/v1/../v1/chat/completions",
        "/V1/chat/completions",
        "/v1/chat/completions/",
        "/v1/%63hat/completions",
        "/v1/chat/completions%2F",
    ] {
        let answer = gw.post_as(path, Some(KEY), chat("chat")).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (StatusCode::NOT_FOUND, "unknown_route"),
            "{path}"
        );
    }
    assert_eq!(fake.request_count(), 0);
}
