//! Routing end to end: each strategy under controlled signals, capability tags, `auto`, traffic
//! splits, per-request overrides, and the replay of recorded decisions.

use std::time::Duration;

use fake_provider::{FakeProvider, Script};
use http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// The test key's org (`acme`) gets `spec` as its RoutingPolicy.
fn with_policy(groups: &str, spec: &str) -> String {
    config_with(&format!(
        "{groups}{}",
        policy("acme", &format!("  orgs: [acme]\n{spec}"))
    ))
}

async fn chats(gw: &TestGateway, model: &str, n: usize) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(n);
    for _ in 0..n {
        let answer = gw.post("/v1/chat/completions", chat(model)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answers.push(answer);
    }
    answers
}

#[tokio::test]
async fn least_busy_sends_each_request_to_the_deployment_with_fewer_in_flight() {
    let a = FakeProvider::start().await.unwrap();
    let b = FakeProvider::start().await.unwrap();
    // Weights 100:1 would send nearly everything to `a` under simple-shuffle.
    let groups = group(
        "chat",
        &["chat"],
        &[
            upstream("a", &a.base_url(), 100),
            upstream("b", &b.base_url(), 1),
        ],
        &[],
    );
    let gw = std::sync::Arc::new(
        TestGateway::start(&with_policy(&groups, "  strategy: least-busy")).await,
    );
    for _ in 0..4 {
        a.push(Script::Hold);
        b.push(Script::Hold);
    }
    let mut held = Vec::new();
    for i in 1..=4 {
        let gw = gw.clone();
        held.push(tokio::spawn(async move {
            gw.post("/v1/chat/completions", chat("chat")).await
        }));
        eventually("the request to be held upstream", || {
            std::future::ready(a.request_count() + b.request_count() == i)
        })
        .await;
    }
    assert_eq!(
        (a.request_count(), b.request_count()),
        (2, 2),
        "in-flight counts decide, not weights"
    );
    a.release(4);
    b.release(4);
    for request in held {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
}

#[tokio::test]
async fn usage_based_skips_deployments_at_their_declared_rpm() {
    let fake = FakeProvider::start().await.unwrap();
    let deployments = [
        upstream_with("small", &fake.base_url(), "      rpm: 2\n"),
        upstream_with("large", &fake.base_url(), "      rpm: 10\n"),
    ];
    let gw = TestGateway::start(&with_policy(
        &group("chat", &["chat"], &deployments, &[]),
        "  strategy: usage-based",
    ))
    .await;
    let served = deployments_of(&chats(&gw, "chat", 12).await);
    let count = |name: &str| served.iter().filter(|d| *d == name).count();
    assert_eq!((count("small"), count("large")), (2, 10), "{served:?}");

    let full = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        (full.status, full.error_code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "deployments_at_capacity")
    );
    assert_eq!(
        fake.request_count(),
        12,
        "a deployment at its limit is skipped, not tried"
    );

    // Live signals survive a config swap: the reloaded config still sees both windows consumed.
    let reloaded = with_policy(
        &group("chat", &["chat", "chat-v2"], &deployments, &[]),
        "  strategy: usage-based",
    );
    gw.write_config(&reloaded);
    gw.wait_for_config(&reloaded).await;
    let still_full = gw.post("/v1/chat/completions", chat("chat-v2")).await;
    assert_eq!(still_full.error_code(), "deployments_at_capacity");

    let last = gw.decision(&served_request_id(&gw, 11).await).await;
    let small = &last["routing"]["groups"][0]["candidates"][0];
    assert_eq!(
        (small["deployment"].as_str(), small["excluded"].as_str()),
        (Some("default/chat/small"), Some("limit"))
    );
}

/// The request id of the n-th decision record.
async fn served_request_id(gw: &TestGateway, n: usize) -> String {
    eventually("decision records", || {
        std::future::ready(gw.decisions().len() > n)
    })
    .await;
    gw.decisions()[n]["request_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn latency_based_converges_on_the_faster_provider() {
    // Far slower than any scheduling noise of a busy machine; tried once, so it costs little.
    let slow = FakeProvider::start_with("127.0.0.1:0".parse().unwrap(), Duration::from_millis(300))
        .await
        .unwrap();
    let fast = FakeProvider::start().await.unwrap();
    let groups = group(
        "chat",
        &["chat"],
        &[
            upstream("slow", &slow.base_url(), 1),
            upstream("fast", &fast.base_url(), 1),
        ],
        &[],
    );
    let spec =
        "  strategy: latency-based\n  latencyBased: {tolerancePercent: 10, explorationPercent: 0}";
    let gw = TestGateway::start(&with_policy(&groups, spec)).await;
    let served = deployments_of(&chats(&gw, "chat", 12).await);
    // Both start unmeasured and are each tried once; from then on the faster one wins.
    assert_eq!(
        served.iter().filter(|d| *d == "slow").count(),
        1,
        "{served:?}"
    );
    assert!(served[2..].iter().all(|d| d == "fast"), "{served:?}");
    let record = gw.decision(served_request_id(&gw, 11).await.as_str()).await;
    let candidates = &record["routing"]["groups"][0]["candidates"];
    assert!(
        candidates[0]["latency_ms"].as_f64().unwrap()
            > candidates[1]["latency_ms"].as_f64().unwrap()
    );
}

#[tokio::test]
async fn cost_based_orders_by_declared_prices() {
    let fake = FakeProvider::start().await.unwrap();
    let deployments = [
        upstream_with(
            "pricey",
            &fake.base_url(),
            "      pricing: {input: 10, output: 30}\n",
        ),
        upstream_with("unpriced", &fake.base_url(), ""),
        upstream_with(
            "cheap",
            &fake.base_url(),
            "      pricing: {input: 0.1, output: 0.4}\n",
        ),
    ];
    let gw = TestGateway::start(&with_policy(
        &group("chat", &["chat"], &deployments, &[]),
        "  strategy: cost-based",
    ))
    .await;
    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(answer.header("x-modelgate-deployment"), "cheap");
    let record = gw.decision(answer.header("x-modelgate-request-id")).await;
    assert_eq!(
        record["plan"],
        json!([
            "default/chat/cheap",
            "default/chat/pricey",
            "default/chat/unpriced"
        ])
    );
    assert!(
        record["routing"]["groups"][0]["candidates"][2]["cost_usd"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    fake.push(Script::status(500));
    let answer = gw.post("/v1/chat/completions", chat("chat")).await;
    assert_eq!(
        answer.header("x-modelgate-deployment"),
        "pricey",
        "the next cheapest, unpriced last"
    );
}

fn image_chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]}]})
}

#[tokio::test]
async fn capability_tags_filter_candidates_and_fallbacks() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}",
        group(
            "smart",
            &["smart"],
            &[
                upstream("text", &fake.base_url(), 1),
                upstream_with("seeing", &fake.base_url(), "      tags: [vision]\n")
            ],
            &["backup"]
        ),
        group(
            "backup",
            &["backup"],
            &[upstream("backup-text", &fake.base_url(), 1)],
            &[]
        )
    );
    let gw = TestGateway::start(&with_policy(&groups, "  strategy: simple-shuffle")).await;
    for _ in 0..5 {
        assert_eq!(
            gw.post("/v1/chat/completions", image_chat("smart"))
                .await
                .header("x-modelgate-deployment"),
            "seeing"
        );
    }
    fake.push(Script::status(500));
    let failed = gw.post("/v1/chat/completions", image_chat("smart")).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    let chain = failed.header("x-modelgate-fallback-chain");
    assert!(
        chain.starts_with("default/smart/seeing;status;500") && !chain.contains(','),
        "never a text-only fallback: {chain}"
    );

    let missing = gw
        .post_with(KEY, &[("x-modelgate-tags", "long-context")], chat("smart"))
        .await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "no_deployment_matches_tags")
    );
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("long-context")
    );

    let by_body = gw
        .post(
            "/v1/chat/completions",
            json!({"model": "smart", "messages": [], "modelgate": {"tags": ["vision"]}}),
        )
        .await;
    assert_eq!(by_body.header("x-modelgate-deployment"), "seeing");
    let record = gw.decision(by_body.header("x-modelgate-request-id")).await;
    assert_eq!(record["routing"]["tags"], json!(["vision"]));
    assert_eq!(
        record["routing"]["groups"][0]["candidates"][0]["excluded"],
        "tags"
    );
}

#[tokio::test]
async fn a_keys_default_tags_apply_until_a_request_names_its_own() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = group(
        "smart",
        &["smart"],
        &[
            upstream_with("text", &fake.base_url(), "      tags: [fast]\n"),
            upstream_with("seeing", &fake.base_url(), "      tags: [vision]\n"),
        ],
        &[],
    );
    let config = with_policy(&groups, "  strategy: simple-shuffle")
        .replace("  org: acme\n", "  org: acme\n  defaultTags: [vision]\n");
    let gw = TestGateway::start(&config).await;
    for _ in 0..5 {
        assert_eq!(
            gw.post("/v1/chat/completions", chat("smart"))
                .await
                .header("x-modelgate-deployment"),
            "seeing"
        );
        let own = gw
            .post_with(KEY, &[("x-modelgate-tags", "fast")], chat("smart"))
            .await;
        assert_eq!(own.header("x-modelgate-deployment"), "text");
    }
}

#[tokio::test]
async fn auto_picks_the_cheapest_the_fastest_or_the_best_group() {
    let slow = FakeProvider::start_with("127.0.0.1:0".parse().unwrap(), Duration::from_millis(30))
        .await
        .unwrap();
    let fast = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}{}",
        group(
            "cheap",
            &["cheap"],
            &[upstream_with(
                "c",
                &slow.base_url(),
                "      pricing: {input: 0.1, output: 0.1}\n"
            )],
            &[]
        ),
        group(
            "strong",
            &["strong"],
            &[upstream_with(
                "s",
                &fast.base_url(),
                "      pricing: {input: 5, output: 15}\n"
            )],
            &[]
        )
        .replace("  models: [strong]\n", "  models: [strong]\n  quality: 9\n"),
        group(
            "eyes",
            &["eyes"],
            &[upstream_with(
                "e",
                &fast.base_url(),
                "      pricing: {input: 1, output: 1}\n      tags: [vision]\n"
            )],
            &[]
        )
        .replace("  models: [eyes]\n", "  models: [eyes]\n  quality: 5\n"),
    );
    let policies = [
        policy(
            "cheapest",
            "  teams: [org-cheap]\n  auto: {groups: [cheap, strong, eyes], mode: cheapest}",
        ),
        policy(
            "fastest",
            "  teams: [org-fast]\n  auto: {name: quick, groups: [cheap, strong], mode: fastest}",
        ),
        policy(
            "quality",
            "  teams: [org-best]\n  auto: {groups: [cheap, strong, eyes], mode: quality-first}",
        ),
    ]
    .concat();
    let keys = [
        virtual_key("k-cheap", "sk-mg-auto-cheap-000001", "  team: org-cheap\n"),
        virtual_key("k-fast", "sk-mg-auto-fast-0000001", "  team: org-fast\n"),
        virtual_key("k-best", "sk-mg-auto-best-0000001", "  team: org-best\n"),
        virtual_key(
            "k-best-limited",
            "sk-mg-auto-limited-0001",
            "  team: org-best\n  allowedModels: [cheap, eyes]\n",
        ),
    ]
    .concat();
    let gw = TestGateway::start(&config_with(&format!("{groups}{policies}{keys}"))).await;
    let routed = |answer: &Answer| answer.header("x-modelgate-routed-model").to_owned();

    let cheapest = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-auto-cheap-000001"),
            chat("auto"),
        )
        .await;
    assert_eq!(
        (cheapest.status, routed(&cheapest).as_str()),
        (StatusCode::OK, "cheap")
    );
    let record = gw.decision(cheapest.header("x-modelgate-request-id")).await;
    assert_eq!(
        record["routing"]["auto"]["order"],
        json!(["default/cheap", "default/eyes", "default/strong"])
    );

    let best = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-auto-best-0000001"),
            chat("auto"),
        )
        .await;
    assert_eq!(routed(&best), "strong");
    let limited = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-auto-limited-0001"),
            chat("auto"),
        )
        .await;
    assert_eq!(
        routed(&limited),
        "eyes",
        "the key's allowed models filter auto"
    );
    let seeing = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-auto-best-0000001"),
            image_chat("auto"),
        )
        .await;
    assert_eq!(routed(&seeing), "eyes", "tags filter auto");

    // The earlier requests measured both groups: the faster one wins every time.
    for _ in 0..4 {
        let quick = gw
            .post_as(
                "/v1/chat/completions",
                Some("sk-mg-auto-fast-0000001"),
                chat("quick"),
            )
            .await;
        assert_eq!(routed(&quick), "strong");
        let auto = &gw.decision(quick.header("x-modelgate-request-id")).await["routing"]["auto"];
        assert_eq!(auto["mode"], "fastest");
        let score = |i: usize| auto["candidates"][i]["score"].as_f64().unwrap();
        assert!(
            score(0) > score(1),
            "cheap (30 ms upstream) is slower than strong: {auto}"
        );
    }
    let not_auto = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-auto-fast-0000001"),
            chat("auto"),
        )
        .await;
    assert_eq!(
        not_auto.status,
        StatusCode::NOT_FOUND,
        "this policy names its auto model `quick`"
    );
}

#[tokio::test]
async fn a_split_follows_its_weights_and_sticky_keys_keep_their_arm() {
    let groups = format!(
        "{}{}",
        group("arm-a", &["arm-a"], &[mock("a")], &[]),
        group("arm-b", &["arm-b"], &[mock("b")], &[])
    );
    let spec = "  splits:\n    - {model: exp, arms: [{group: arm-a, weight: 3}, {group: arm-b, weight: 1}]}\n    - {model: sticky, sticky: true, arms: [{group: arm-a, weight: 1}, {group: arm-b, weight: 1}]}";
    let keys: String = (0..16)
        .map(|i| {
            virtual_key(
                &format!("sticky-{i}"),
                &format!("sk-mg-sticky-key-{i:04}"),
                "",
            )
        })
        .collect();
    let gw = TestGateway::start(&format!("{}{keys}", with_policy(&groups, spec))).await;

    let n = 800u32;
    let mut on_a = 0u32;
    for _ in 0..n {
        let answer = gw.post("/v1/chat/completions", chat("exp")).await;
        on_a += u32::from(answer.header("x-modelgate-routed-model") == "arm-a");
    }
    // Chi-square, 1 degree of freedom, against 3:1; 10.83 is the p = 0.001 critical value.
    let (expected_a, expected_b) = (f64::from(n) * 0.75, f64::from(n) * 0.25);
    let chi2 = (f64::from(on_a) - expected_a).powi(2) / expected_a
        + (f64::from(n - on_a) - expected_b).powi(2) / expected_b;
    assert!(chi2 < 10.83, "{on_a} of {n} on arm-a, chi2 = {chi2}");

    let mut arms_seen = std::collections::BTreeSet::new();
    for i in 0..16 {
        let key = format!("sk-mg-sticky-key-{i:04}");
        let mut arms = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let answer = gw
                .post_as("/v1/chat/completions", Some(&key), chat("sticky"))
                .await;
            arms.insert(answer.header("x-modelgate-routed-model").to_owned());
        }
        assert_eq!(arms.len(), 1, "key {i} switched arms: {arms:?}");
        arms_seen.extend(arms);
    }
    assert_eq!(arms_seen.len(), 2, "keys spread over both arms");
}

#[tokio::test]
async fn overrides_are_honoured_only_where_the_policy_allows_them() {
    let groups = group("chat", &["chat"], &[mock("one"), mock("two")], &[]);
    let closed = policy(
        "closed",
        "  teams: [closed]\n  overrides: {strategy: false, tags: false}",
    );
    let key = virtual_key("closed", "sk-mg-closed-key-000001", "  team: closed\n");
    let config = format!(
        "{}{closed}{key}",
        with_policy(&groups, "  overrides: {strategy: true}")
    );
    let gw = TestGateway::start(&config).await;

    let allowed = gw
        .post_with(KEY, &[("x-modelgate-strategy", "least-busy")], chat("chat"))
        .await;
    assert_eq!(allowed.status, StatusCode::OK);
    let record = gw.decision(allowed.header("x-modelgate-request-id")).await;
    assert_eq!(
        (
            record["strategy"].as_str(),
            record["routing"]["groups"][0]["strategy"].as_str()
        ),
        (Some("least-busy"), Some("least-busy"))
    );
    let bogus = gw
        .post_with(
            KEY,
            &[("x-modelgate-strategy", "fastest-please")],
            chat("chat"),
        )
        .await;
    assert_eq!(
        (bogus.status, bogus.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_strategy")
    );

    let refused = gw
        .post_with(
            "sk-mg-closed-key-000001",
            &[("x-modelgate-strategy", "cost-based")],
            chat("chat"),
        )
        .await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "override_not_allowed")
    );
    assert_eq!(refused.json()["error"]["param"], "x-modelgate-strategy");
    let tags = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-closed-key-000001"),
            json!({"model": "chat", "messages": [], "modelgate": {"tags": ["code"]}}),
        )
        .await;
    assert_eq!(
        (tags.status, tags.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "override_not_allowed")
    );
    // Implied tags are not an override: the request really needs vision.
    let image = gw
        .post_as(
            "/v1/chat/completions",
            Some("sk-mg-closed-key-000001"),
            image_chat("chat"),
        )
        .await;
    assert_eq!(image.error_code(), "no_deployment_matches_tags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_replays_thousands_of_recorded_decisions_exactly() {
    let priced = |name: &str, price: f64| {
        mock_with(
            name,
            &format!("      pricing: {{input: {price}, output: {price}}}\n      rpm: 100000\n"),
        )
    };
    let groups = format!(
        "{}{}{}",
        group(
            "g1",
            &["g1"],
            &[
                priced("a", 1.0),
                priced("b", 2.0),
                priced("c", 2.0),
                priced("d", 0.5)
            ],
            &["g2"]
        ),
        group("g2", &["g2"], &[priced("e", 1.0), priced("f", 1.0)], &[]),
        group(
            "g3",
            &["g3"],
            &[priced("g", 3.0), priced("h", 1.0)],
            &["g1"]
        )
    );
    let spec = "  overrides: {strategy: true}\n  latencyBased: {tolerancePercent: 20, explorationPercent: 10}\n  auto: {groups: [g3, g2, g1], mode: cheapest}\n  splits:\n    - {model: exp, arms: [{group: g1, weight: 2}, {group: g3, weight: 1}]}\n    - {model: sticky, sticky: true, arms: [{group: g2, weight: 1}, {group: g3, weight: 1}]}";
    let gw = std::sync::Arc::new(TestGateway::start(&with_policy(&groups, spec)).await);
    let strategies = [
        "simple-shuffle",
        "least-busy",
        "usage-based",
        "latency-based",
        "cost-based",
    ];
    let models = ["g1", "g2", "g3", "auto", "exp", "sticky"];
    let total = 2400usize;
    let mut workers = Vec::new();
    for worker in 0..8usize {
        let gw = gw.clone();
        workers.push(tokio::spawn(async move {
            for i in (worker..total).step_by(8) {
                let mut body = chat(models[i % models.len()]);
                if i % 3 == 0 {
                    body["stream"] = json!(true);
                }
                let answer = gw
                    .post_with(
                        KEY,
                        &[("x-modelgate-strategy", strategies[i % strategies.len()])],
                        body,
                    )
                    .await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    eventually("every decision record", || {
        std::future::ready(gw.decisions().len() == total)
    })
    .await;

    let log = std::fs::read_to_string(&gw.decision_log).unwrap();
    let replay = modelgate_dataplane::route::explain::replay(log.as_bytes()).unwrap();
    assert_eq!((replay.records, replay.replayed), (total, total));
    assert!(
        replay.mismatches.is_empty(),
        "{:?}",
        &replay.mismatches[..replay.mismatches.len().min(3)]
    );

    // A record whose plan does not follow from its inputs is caught.
    let mut first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    let order = first["routing"]["groups"][0]["order"]
        .as_array_mut()
        .unwrap();
    order.reverse();
    let tampered = format!("{first}\n");
    let replay = modelgate_dataplane::route::explain::replay(tampered.as_bytes()).unwrap();
    assert_eq!(replay.mismatches.len(), 1);
}
