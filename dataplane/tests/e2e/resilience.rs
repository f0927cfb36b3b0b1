//! Retries, Retry-After, per-org circuit breakers and the retry budget, end to end. Backoffs are
//! configured in milliseconds here; their timing law is unit-tested with paused time.

use fake_provider::{FakeProvider, Script};
use http::StatusCode;
use serde_json::Value;

use crate::support::*;

fn outcomes(record: &Value) -> Vec<String> {
    record["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["deployment"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap(),
                a["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

fn policy_for_acme(spec: &str) -> String {
    policy("acme", &format!("  orgs: [acme]\n{spec}"))
}

#[tokio::test]
async fn a_link_is_retried_with_backoff_within_the_policys_bounds() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = group(
        "chat",
        &["chat"],
        &[upstream("only", &fake.base_url(), 1)],
        &[],
    );
    let spec = "  retries: {attempts: 2, backoffBase: 1ms, backoffMax: 5ms}\n  circuitBreaker: {consecutiveFailures: 100}";
    let gw = TestGateway::start(&config_with(&format!("{groups}{}", policy_for_acme(spec)))).await;

    fake.push(Script::status(500));
    fake.push(Script::status(503));
    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        (answer.status, answer.header("x-modelgate-attempts")),
        (StatusCode::OK, "3")
    );

    for _ in 0..3 {
        fake.push(Script::status(500));
    }
    let failed = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        (failed.status, failed.header("x-modelgate-attempts")),
        (StatusCode::BAD_GATEWAY, "3")
    );

    // A caller may ask for fewer retries, never more than its policy allows.
    fake.push(Script::status(500));
    let none = gw
        .post_with(KEY, &[("x-modelgate-retries", "0")], chat("chat"))
        .await;
    assert_eq!(
        (none.status, none.header("x-modelgate-attempts")),
        (StatusCode::BAD_GATEWAY, "1")
    );
    for _ in 0..6 {
        fake.push(Script::status(500));
    }
    let capped = gw
        .post_with(KEY, &[("x-modelgate-retries", "5")], chat("chat"))
        .await;
    assert_eq!(capped.header("x-modelgate-attempts"), "3");
    let bad = gw
        .post_with(KEY, &[("x-modelgate-retries", "many")], chat("chat"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    fake.reset();

    // The caller's own mistake is never retried.
    fake.push(Script::status(400));
    let own = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        (own.status, fake.request_count()),
        (StatusCode::BAD_REQUEST, 1)
    );
}

#[tokio::test]
async fn retry_after_cools_the_link_down_and_moves_on_at_once() {
    let fake = FakeProvider::start().await.unwrap();
    let deployments = [
        upstream("first", &fake.base_url(), 1),
        upstream("second", &fake.base_url(), 0),
    ];
    let groups = group("chat", &["chat"], &deployments, &[]);
    let spec = "  retries: {attempts: 3, backoffBase: 1ms}";
    let gw = TestGateway::start(&config_with(&format!("{groups}{}", policy_for_acme(spec)))).await;

    fake.push(Script::Status {
        status: 429,
        body: None,
        retry_after: Some("60".to_owned()),
    });
    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        (answer.status, answer.header("x-modelgate-deployment")),
        (StatusCode::OK, "second")
    );
    let record = gw.decision(answer.header("x-modelgate-request-id")).await;
    assert_eq!(
        outcomes(&record),
        vec!["first:status", "second:ok"],
        "no retry of the rate-limited link"
    );

    // For the next minute the link is cooling down: skipped without a call.
    let next = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(next.served_by(), ("second", "1"));
    let record = gw.decision(next.header("x-modelgate-request-id")).await;
    assert_eq!(outcomes(&record), vec!["first:breaker_open", "second:ok"]);
    assert_eq!(fake.request_count(), 3);
}

/// Another org's copy of `groups`: its own namespace (an org of its own name) with its own
/// credential Secret and key, calling the same upstream.
fn other_org(groups: &str, breaker: &str, key: &str) -> String {
    let in_other = |documents: &str| {
        documents.replace("metadata: {name: ", "metadata: {namespace: other, name: ")
    };
    format!(
        "{}{}{}",
        in_other(groups),
        in_other(&policy("default", breaker)),
        in_other(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: keys, {TEST_SECRET_META}}}\n\
             stringData: {{upstream: sk-upstream-canary-0001}}\n---\n{}",
            virtual_key("other", key, "")
        )),
    )
}

#[tokio::test]
async fn breakers_are_per_org_and_never_eject_the_last_link() {
    let fake = FakeProvider::start().await.unwrap();
    let deployments = [
        upstream("flaky", &fake.base_url(), 1),
        upstream("steady", &fake.base_url(), 0),
    ];
    let groups = format!(
        "{}{}",
        group("chat", &["chat"], &deployments, &[]),
        group(
            "solo",
            &["solo"],
            &[upstream("alone", &fake.base_url(), 1)],
            &[]
        )
    );
    let breaker = "  circuitBreaker: {consecutiveFailures: 2, cooldown: 60s}";
    let gw = TestGateway::start(&config_with(&format!(
        "{groups}{}{}",
        policy_for_acme(breaker),
        other_org(&groups, breaker, "sk-mg-other-org-key-001")
    )))
    .await;

    for _ in 0..2 {
        fake.push(Script::status(500));
        let answer = gw.post("/v1/chat/completions", chat("chat")).await;
        assert_eq!(answer.header("x-modelgate-deployment"), "steady");
    }
    // acme's breaker on `flaky` is open: skipped, no call.
    let skipped = gw.post("/v1/chat/completions", chat("chat")).await;
    let record = gw.decision(skipped.header("x-modelgate-request-id")).await;
    assert_eq!(outcomes(&record), vec!["flaky:breaker_open", "steady:ok"]);
    // Another org's traffic still reaches `flaky`.
    let other_org = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-other-org-key-001"),
            chat("chat"),
        )
        .await;
    assert_eq!(other_org.header("x-modelgate-deployment"), "flaky");
    let metrics = gw.get(gw.admin_url("/metrics"), None).await.text();
    assert!(
        metrics.contains("modelgate_breaker_transitions_total{transition=\"opened\"} 1"),
        "{metrics}"
    );

    // A single-deployment group is never ejected: with its breaker open, it is still tried.
    for _ in 0..2 {
        fake.push(Script::status(500));
        gw.post("/v1/chat/completions", chat("solo")).await;
    }
    let solo = gw.post("/v1/chat/completions", chat("solo")).await;
    assert_eq!(
        (solo.status, solo.header("x-modelgate-deployment")),
        (StatusCode::OK, "alone")
    );
}

#[tokio::test]
async fn the_retry_budget_bounds_retries_against_a_dead_upstream() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = group(
        "chat",
        &["chat"],
        &[upstream("dead", &fake.base_url(), 1)],
        &[],
    );
    let spec = "  retries: {attempts: 5, backoffBase: 1ms, backoffMax: 1ms, maxAttempts: 10}\n  circuitBreaker: {consecutiveFailures: 1000}";
    let gw = TestGateway::start(&config_with(&format!("{groups}{}", policy_for_acme(spec)))).await;
    let requests = 60;
    for _ in 0..requests * 6 {
        fake.push(Script::status(500));
    }
    for _ in 0..requests {
        assert_eq!(
            gw.post("/v1/chat/completions", chat("chat")).await.status,
            StatusCode::BAD_GATEWAY
        );
    }
    // Unbounded, 60 requests x 6 attempts = 360 calls. The budget allows, per 10 s window,
    // 10 retries a second plus 20% of the requests: 100 + 12.
    let calls = fake.request_count();
    assert!(calls <= requests + 100 + 12, "{calls} calls");
    assert!(calls > requests, "retries happened while budget was left");
}

/// The fault on the first link; the second link always answers.
#[derive(Clone, Copy, Debug)]
enum Fault {
    ConnectRefused,
    Tls,
    RateLimited,
    ServerError,
    FirstByteTimeout,
    SseErrorBeforeContent,
    CutAfterContent,
}

/// The reliability plan's fault matrix: each fault, streamed and not, and what the client sees.
#[tokio::test]
async fn the_fault_matrix() {
    let faults = [
        Fault::ConnectRefused,
        Fault::Tls,
        Fault::RateLimited,
        Fault::ServerError,
        Fault::FirstByteTimeout,
        Fault::SseErrorBeforeContent,
        Fault::CutAfterContent,
    ];
    for fault in faults {
        for stream in [false, true] {
            let fake = FakeProvider::start().await.unwrap();
            let dead = dead_url();
            let first_url = match fault {
                Fault::ConnectRefused => dead.url.clone(),
                // TLS spoken to a plain-HTTP server: the handshake fails.
                Fault::Tls => fake.base_url().replace("http://", "https://"),
                _ => fake.base_url(),
            };
            // Only the timeout case gets a short first-byte limit: elsewhere a slow first byte
            // on a busy machine must not turn into a fail-over the case does not expect.
            let timeouts = match fault {
                Fault::FirstByteTimeout => "      timeouts: {firstByte: 1s}\n",
                _ => "",
            };
            let first = upstream_with("first", &first_url, &format!("      weight: 1\n{timeouts}"));
            let second = upstream("second", &fake.base_url(), 0);
            let gw = TestGateway::start(&config_with(&group(
                "chat",
                &["chat"],
                &[first, second],
                &[],
            )))
            .await;
            let script = match fault {
                Fault::RateLimited => Some(Script::Status {
                    status: 429,
                    body: None,
                    retry_after: Some("30".to_owned()),
                }),
                Fault::ServerError => Some(Script::status(500)),
                Fault::FirstByteTimeout => Some(Script::Delay { ms: 60_000 }),
                Fault::SseErrorBeforeContent => Some(Script::StreamErrorAfter { chunks: 1 }),
                Fault::CutAfterContent => Some(Script::CutStreamAfter { chunks: 2 }),
                Fault::ConnectRefused | Fault::Tls => None,
            };
            if let Some(script) = script {
                fake.push(script);
            }
            let mut body = chat("chat");
            body["stream"] = Value::Bool(stream);
            let answer = gw.post("/v1/chat/completions", body).await;
            let case = format!("{fault:?}, stream: {stream}");
            assert_eq!(answer.status, StatusCode::OK, "{case}: {}", answer.text());
            // Stream-only faults do not touch a complete answer: the first link serves it.
            let stream_only =
                matches!(fault, Fault::SseErrorBeforeContent | Fault::CutAfterContent);
            let (deployment, attempts) = match (fault, stream) {
                (Fault::CutAfterContent, true) => ("first", "1"),
                _ if stream_only && !stream => ("first", "1"),
                _ => ("second", "2"),
            };
            assert_eq!(answer.served_by(), (deployment, attempts), "{case}");
            let text = answer.text();
            if matches!(fault, Fault::CutAfterContent) && stream {
                assert!(
                    text.contains("\"finish_reason\":\"error\"") && !text.contains("[DONE]"),
                    "{case}: {text}"
                );
            } else if stream {
                assert!(
                    text.trim_end().ends_with("data: [DONE]") && !text.contains("\"error\""),
                    "{case}: {text}"
                );
            } else {
                assert!(
                    answer.json()["choices"][0]["message"]["content"].is_string(),
                    "{case}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_total_deadline_spans_every_attempt() {
    let fake = FakeProvider::start().await.unwrap();
    let slow = "      timeouts: {firstByte: 5s}\n";
    let deployments = [
        upstream_with("a", &fake.base_url(), slow),
        upstream_with("b", &fake.base_url(), slow),
    ];
    let groups = group("chat", &["chat"], &deployments, &[]);
    let gw = TestGateway::start(&config_with(&format!(
        "{groups}{}",
        policy_for_acme("  timeouts: {total: 400ms}")
    )))
    .await;
    fake.push(Script::Delay { ms: 10_000 });
    fake.push(Script::Delay { ms: 10_000 });
    let started = tokio::time::Instant::now();
    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        took < std::time::Duration::from_secs(3),
        "the deadline, not the 5 s per-try timeout, ended it: {took:?}"
    );
    let chain = answer.header("x-modelgate-fallback-chain");
    assert!(chain.contains(";timeout;"), "{chain}");
}

#[tokio::test]
async fn a_stalled_stream_is_cut_by_the_idle_timeout() {
    let fake = FakeProvider::start().await.unwrap();
    // Long enough that a busy machine's ordinary gap between chunks never trips it.
    let idle = "      timeouts: {idle: 1s}\n";
    let deployments = [
        upstream_with(
            "first",
            &fake.base_url(),
            &format!("{idle}      weight: 1\n"),
        ),
        upstream("second", &fake.base_url(), 0),
    ];
    let gw = TestGateway::start(&config_with(&group("chat", &["chat"], &deployments, &[]))).await;
    let mut body = chat("chat");
    body["stream"] = Value::Bool(true);

    // Stalled before content: an unseen fail-over.
    fake.push(Script::StallAfter { chunks: 1 });
    let before = gw.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(before.served_by(), ("second", "2"));
    assert!(before.text().trim_end().ends_with("data: [DONE]"));

    // Stalled after content: the stream ends with the error chunk.
    fake.push(Script::StallAfter { chunks: 2 });
    let after = gw.post("/v1/chat/completions", body).await;
    assert_eq!(after.header("x-modelgate-deployment"), "first");
    let text = after.text();
    assert!(
        text.contains("\"finish_reason\":\"error\"") && !text.contains("[DONE]"),
        "{text}"
    );
}

/// The reliability plan's chain: the primary fails half the time; every client request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_link_cross_provider_chain_serves_every_request() {
    let primary = FakeProvider::start().await.unwrap();
    let secondary = FakeProvider::start().await.unwrap();
    let tertiary = FakeProvider::start().await.unwrap();
    let anthropic = format!(
        "    - name: secondary\n      provider: anthropic\n      model: claude-sonnet-4-5\n      baseUrl: http://{}\n      credentials: {{secretKeyRef: {{name: keys, key: upstream}}}}\n",
        secondary.addr()
    );
    let groups = format!(
        "{}{}{}",
        group(
            "chat",
            &["chat"],
            &[upstream("primary", &primary.base_url(), 1)],
            &["chat-anthropic"]
        ),
        group(
            "chat-anthropic",
            &["chat-anthropic"],
            &[anthropic],
            &["chat-last"]
        ),
        group(
            "chat-last",
            &["chat-last"],
            &[upstream("tertiary", &tertiary.base_url(), 1)],
            &[]
        )
    );
    let gw = std::sync::Arc::new(TestGateway::start(&config_with(&groups)).await);
    let total = 2000usize;
    // Half fail at the first link; half of those fail at the second (Anthropic's overload).
    for i in 0..total {
        primary.push(if i % 2 == 0 {
            Script::status(503)
        } else {
            Script::Ok
        });
        secondary.push(if i % 2 == 0 {
            Script::status(529)
        } else {
            Script::Ok
        });
    }
    let mut workers = Vec::new();
    for worker in 0..8 {
        let gw = gw.clone();
        workers.push(tokio::spawn(async move {
            let mut served = std::collections::BTreeMap::<String, usize>::new();
            for i in (worker..total).step_by(8) {
                let mut body = chat("chat");
                body["stream"] = Value::Bool(i % 2 == 1);
                let answer = gw.post("/v1/chat/completions", body).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                *served
                    .entry(answer.header("x-modelgate-deployment").to_owned())
                    .or_default() += 1;
            }
            served
        }));
    }
    let mut deployments = std::collections::BTreeMap::<String, usize>::new();
    for worker in workers {
        for (deployment, n) in worker.await.unwrap() {
            *deployments.entry(deployment).or_default() += n;
        }
    }
    assert_eq!(
        deployments.values().sum::<usize>(),
        total,
        "every request succeeded"
    );
    for link in ["primary", "secondary", "tertiary"] {
        assert!(
            deployments.get(link).copied().unwrap_or(0) > 0,
            "every link of the chain served: {deployments:?}"
        );
    }
    assert!(
        secondary
            .requests()
            .iter()
            .all(|r| r.path.ends_with("/v1/messages")),
        "the second link spoke Anthropic's API"
    );
}

#[tokio::test]
async fn a_request_too_long_for_its_group_goes_to_the_context_window_fallback() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}",
        group(
            "small",
            &["small"],
            &[upstream("short", &fake.base_url(), 1)],
            &[]
        )
        .replace(
            "  models: [small]\n",
            "  models: [small]\n  contextWindowFallbacks: [large]\n"
        ),
        group(
            "large",
            &["large"],
            &[upstream("long", &fake.base_url(), 1)],
            &[]
        )
    );
    let gw = TestGateway::start(&config_with(&groups)).await;
    let too_long = || Script::Status {
        status: 400,
        body: Some(
            serde_json::json!({"error": {"message": "This model's maximum context length is 8 tokens.",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
        ),
        retry_after: None,
    };
    fake.push(too_long());
    let answer = gw.post("/v1/chat/completions", chat("small")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        (
            answer.header("x-modelgate-routed-model"),
            answer.header("x-modelgate-attempts")
        ),
        ("large", "2")
    );
    let record = gw.decision(answer.header("x-modelgate-request-id")).await;
    assert_eq!(
        record["context_window_routing"]["groups"][0]["group"],
        "default/large"
    );
    let log = std::fs::read_to_string(&gw.decision_log).unwrap();
    assert!(
        modelgate_dataplane::route::explain::replay(log.as_bytes())
            .unwrap()
            .mismatches
            .is_empty()
    );

    // Without a context-window fallback the caller's error comes back as it is.
    fake.push(too_long());
    let direct = gw.post("/v1/chat/completions", chat("large")).await;
    assert_eq!(
        (direct.status, direct.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "context_length_exceeded")
    );
}

/// A name that resolves to an address its deployment may not reach is refused when connecting,
/// whatever the config said when it was checked: here `localhost`, in a compiled config whose
/// deployment may not reach loopback (what the operator publishes for a cluster).
#[tokio::test]
async fn a_name_resolving_to_a_refused_address_is_refused_at_connect_time() {
    let fake = FakeProvider::start().await.unwrap();
    let port = fake.addr().port();
    let yaml = config_with(&group(
        "chat",
        &["chat"],
        &[upstream("named", &format!("http://localhost:{port}/v1"), 1)],
        &[],
    ));
    let env = |_: &str| None;
    let (mut config, _) =
        modelgate_crds::load_config(yaml.as_bytes(), &env, jiff::Timestamp::now()).unwrap();
    let deployment = &mut config
        .model_groups
        .get_mut("default/chat")
        .unwrap()
        .deployments[0];
    assert!(
        deployment.allow_loopback,
        "a standalone file may reach loopback"
    );
    deployment.allow_loopback = false;
    config.seal();
    let gw = TestGateway::start(&String::from_utf8(config.to_json()).unwrap()).await;

    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (StatusCode::BAD_GATEWAY, "all_deployments_failed")
    );
    let record = gw.decision(answer.header("x-modelgate-request-id")).await;
    let attempt = &record["attempts"][0];
    assert_eq!(attempt["outcome"], "connect", "{record}");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap()
            .contains("resolves to a loopback address"),
        "{record}"
    );
    assert_eq!(fake.request_count(), 0, "nothing reached the upstream");
}
