//! `/metrics` after a scripted mix of traffic: every documented series is there with the value
//! the traffic implies, with exactly the documented labels, Prometheus' own `promtool check
//! metrics` accepts the exposition, and every PromQL expression of the shipped Grafana dashboard
//! and alert rules names series, labels and values the scrape has.

use std::collections::BTreeMap;

use fake_provider::{FakeProvider, Script};
use http::StatusCode;
use serde_json::{Value, json};
use testbin::exposition::Sample;

use crate::support::*;

/// USD per 1M tokens, in and out, of the fake deployment.
const PRICE: f64 = 2.0;
const TEAM_KEY: &str = "sk-mg-e2e-team-key-0001";
const POOR_KEY: &str = "sk-mg-e2e-poor-key-0001";

struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    async fn of(gw: &TestGateway) -> Self {
        let answer = gw.get(gw.admin_url("/metrics"), None).await;
        assert_eq!(answer.status, StatusCode::OK);
        let text = answer.text();
        let samples = testbin::exposition::samples(&text);
        Self { text, samples }
    }

    /// The value of the series `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn expect(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let got = self.value(name, labels);
        assert!(
            got.is_some_and(|got| (got - want).abs() < 1e-9),
            "{name}{labels:?}: want {want}, got {got:?}; series of that name: {:#?}",
            self.named(name)
        );
    }

    fn named(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The sum of every sample of `name`.
    fn total(&self, name: &str) -> f64 {
        self.named(name).iter().map(|s| s.value).sum()
    }
}

fn ask(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

fn config(fake: &FakeProvider, dead: &str, extra: &str) -> String {
    let secrets = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: more-keys, labels: {{modelgate.io/virtual-key: \"true\"}}}}\nstringData: {{team: {TEAM_KEY}, poor: {POOR_KEY}}}\n---\napiVersion: modelgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {{name: ml}}\nspec:\n  team: ml\n  keySecretRef: {{name: more-keys, key: team}}\n---\napiVersion: modelgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {{name: poor}}\nspec:\n  keySecretRef: {{name: more-keys, key: poor}}\n  budget: {{limit: 0.000000001, period: daily}}\n---\n"
    );
    let chat = priced_chat_group(fake, PRICE);
    let primary = group(
        "primary",
        &["primary"],
        &[upstream_with(
            "broken",
            dead,
            "      credentials: {secretKeyRef: {name: keys, key: upstream}}\n",
        )],
        &["chat"],
    );
    let policies = format!(
        "{}{}",
        policy(
            "acme",
            "  orgs: [acme]\n  retries: {attempts: 1, backoffBase: 1ms, backoffMax: 2ms}\n  circuitBreaker: {consecutiveFailures: 2, cooldown: 10m}"
        ),
        policy(
            "ml",
            "  teams: [ml]\n  spendTags: [{key: stage, values: [embed, generate]}, {key: feature}]"
        )
    );
    config_with(&format!("{secrets}{chat}{primary}{policies}{extra}"))
}

/// (prompt, completion) tokens of the usage a client saw.
fn usage_of(answer: &Answer) -> (f64, f64) {
    let usage = answer.usage();
    (
        usage["prompt_tokens"].as_f64().unwrap(),
        usage["completion_tokens"].as_f64().unwrap(),
    )
}

#[tokio::test]
async fn every_documented_series_has_the_value_the_traffic_implies_and_promtool_accepts_it() {
    let fake = FakeProvider::start().await.unwrap();
    let dead = dead_url();
    let first_config = config(&fake, &dead.url, "");
    let gw = TestGateway::start_cached(&first_config, Default::default()).await;
    let bypass = [("x-modelgate-cache", "false")];

    // A miss that is stored, then the same question answered from the cache.
    let miss = gw.post("/v1/chat/completions", ask("chat", "one")).await;
    let hit = gw.post("/v1/chat/completions", ask("chat", "one")).await;
    assert_eq!(hit.header("x-modelgate-cache"), "hit");
    // A stream, which has a time to first token.
    let mut stream_body = ask("chat", "two");
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let stream = gw.post("/v1/chat/completions", stream_body).await;
    // The dead link fails twice (a retry), its breaker opens, and the group falls back to chat.
    let fell_back = gw
        .post("/v1/chat/completions", ask("primary", "three"))
        .await;
    // The dead link is skipped on its open breaker.
    let skipped = gw
        .post("/v1/chat/completions", ask("primary", "four"))
        .await;
    // One 500 from the fake, retried on the same link.
    fake.push(Script::status(500));
    let retried = gw.post_with(KEY, &bypass, ask("chat", "five")).await;
    let team = gw
        .post_with(
            TEAM_KEY,
            &[("x-modelgate-spend-tags", "stage=embed")],
            ask("chat", "six"),
        )
        .await;
    let poor = gw
        .post_as("/v1/chat/completions", Some(POOR_KEY), ask("chat", "seven"))
        .await;
    let unknown = gw.post("/v1/chat/completions", ask("nope", "eight")).await;
    for served in [&miss, &hit, &stream, &fell_back, &skipped, &retried, &team] {
        assert_eq!(served.status, StatusCode::OK, "{}", served.text());
    }
    assert_eq!(poor.error_code(), "budget_exceeded");
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(retried.header("x-modelgate-attempts"), "2");

    // A call held upstream is in flight on its deployment until it is released.
    fake.push(Script::Hold);
    let before = fake.request_count();
    let (held, in_flight) = tokio::join!(gw.post_with(KEY, &bypass, ask("chat", "nine")), async {
        eventually("the held call to reach the fake", || {
            std::future::ready(fake.request_count() > before)
        })
        .await;
        let scrape = Scrape::of(&gw).await;
        fake.release(1);
        scrape
    });
    assert_eq!(held.status, StatusCode::OK);

    let next_config = config(
        &fake,
        &dead.url,
        &group("spare", &["spare"], &[mock("m")], &[]),
    );
    gw.write_config(&next_config);
    gw.wait_for_config(&next_config).await;
    eventually("every request to be counted", || async {
        Scrape::of(&gw).await.total("modelgate_requests_total") == 10.0
    })
    .await;
    let scrape = Scrape::of(&gw).await;

    let chat_fake = "default/chat/fake";
    let broken = "default/primary/broken";
    let endpoint = ("endpoint", "chat_completions");
    let e2e = [("org", "acme"), ("team", ""), ("key", "default/e2e")];
    let ml = [("org", "acme"), ("team", "ml"), ("key", "default/ml")];
    let at_chat_fake = [("group", "default/chat"), ("deployment", chat_fake)];
    let at_broken = [("group", "default/primary"), ("deployment", broken)];
    in_flight.expect("modelgate_deployment_in_flight", &at_chat_fake, 1.0);
    scrape.expect("modelgate_deployment_in_flight", &at_chat_fake, 0.0);
    scrape.expect("modelgate_deployment_in_flight", &at_broken, 0.0);

    scrape.expect("modelgate_requests_total", &[endpoint, ("code", "ok")], 8.0);
    scrape.expect(
        "modelgate_requests_total",
        &[endpoint, ("code", "budget_exceeded")],
        1.0,
    );
    scrape.expect(
        "modelgate_requests_total",
        &[endpoint, ("code", "model_not_found")],
        1.0,
    );

    // Served by the fake: the miss, the stream, the retried call and the held one in `chat`;
    // the two fallbacks in `primary`; the team's call.
    let served_by_fake = |group: &'static str| {
        [
            endpoint,
            ("group", group),
            ("provider", "openai-compatible"),
            ("deployment", chat_fake),
            ("status_class", "2xx"),
        ]
    };
    scrape.expect(
        "modelgate_request_duration_seconds_count",
        &served_by_fake("chat"),
        5.0,
    );
    scrape.expect(
        "modelgate_request_duration_seconds_count",
        &served_by_fake("primary"),
        2.0,
    );
    scrape.expect(
        "modelgate_request_duration_seconds_count",
        &[
            endpoint,
            ("group", "chat"),
            ("provider", "cache"),
            ("deployment", ""),
            ("status_class", "2xx"),
        ],
        1.0,
    );
    scrape.expect(
        "modelgate_request_duration_seconds_count",
        &[
            endpoint,
            ("group", ""),
            ("provider", "none"),
            ("deployment", ""),
            ("status_class", "4xx"),
        ],
        1.0,
    );
    scrape.expect(
        "modelgate_request_duration_seconds_count",
        &[
            endpoint,
            ("group", "chat"),
            ("provider", "none"),
            ("deployment", ""),
            ("status_class", "4xx"),
        ],
        1.0,
    );
    let ttft = [
        endpoint,
        ("group", "chat"),
        ("provider", "openai-compatible"),
        ("deployment", chat_fake),
    ];
    scrape.expect("modelgate_time_to_first_token_seconds_count", &ttft, 1.0);
    assert_eq!(
        scrape.total("modelgate_time_to_first_token_seconds_count"),
        1.0
    );

    // Tokens and spend by payer and group, as the clients saw them in their usage.
    let sum = |answers: &[&Answer]| {
        answers
            .iter()
            .map(|a| usage_of(a))
            .fold((0.0, 0.0), |acc, u| (acc.0 + u.0, acc.1 + u.1))
    };
    let in_chat = sum(&[&miss, &stream, &retried, &held]);
    let in_primary = sum(&[&fell_back, &skipped]);
    let of_team = sum(&[&team]);
    let payer = |who: &[(&'static str, &'static str); 3], group: &'static str| {
        let mut labels = who.to_vec();
        labels.push(("group", group));
        labels
    };
    for (who, group, (input, output)) in [
        (&e2e, "chat", in_chat),
        (&e2e, "primary", in_primary),
        (&ml, "chat", of_team),
    ] {
        let mut labels = payer(who, group);
        labels.push(("direction", "input"));
        scrape.expect("modelgate_tokens_total", &labels, input);
        labels.pop();
        labels.push(("direction", "output"));
        scrape.expect("modelgate_tokens_total", &labels, output);
        let spend = (input + output) * PRICE / 1e6;
        scrape.expect("modelgate_spend_usd_total", &payer(who, group), spend);
    }
    // The team's call carried a spend tag.
    let tagged = [
        ("org", "acme"),
        ("team", "ml"),
        ("group", "chat"),
        ("tag", "stage"),
        ("value", "embed"),
    ];
    scrape.expect(
        "modelgate_spend_by_tag_usd_total",
        &tagged,
        (of_team.0 + of_team.1) * PRICE / 1e6,
    );
    let mut labels = tagged.to_vec();
    labels.push(("direction", "input"));
    scrape.expect("modelgate_tokens_by_tag_total", &labels, of_team.0);
    labels.pop();
    labels.push(("direction", "output"));
    scrape.expect("modelgate_tokens_by_tag_total", &labels, of_team.1);
    assert_eq!(scrape.named("modelgate_spend_by_tag_usd_total").len(), 1);
    // The cache hit cost nothing; the refused key spent nothing.
    assert!(
        scrape
            .named("modelgate_spend_usd_total")
            .iter()
            .all(|s| s.labels["key"] != "default/poor"),
        "{:#?}",
        scrape.named("modelgate_spend_usd_total")
    );

    // Attempts by deployment and outcome; retries and fallbacks by reason.
    let attempt = |deployment, outcome| {
        [
            ("provider", "openai-compatible"),
            ("deployment", deployment),
            ("outcome", outcome),
        ]
    };
    scrape.expect(
        "modelgate_upstream_attempts_total",
        &attempt(broken, "connect"),
        2.0,
    );
    scrape.expect(
        "modelgate_upstream_attempts_total",
        &attempt(chat_fake, "status"),
        1.0,
    );
    scrape.expect(
        "modelgate_upstream_attempts_total",
        &attempt(chat_fake, "ok"),
        7.0,
    );
    scrape.expect("modelgate_retries_total", &[("reason", "connect")], 1.0);
    scrape.expect("modelgate_retries_total", &[("reason", "status")], 1.0);
    scrape.expect("modelgate_fallbacks_total", &[("reason", "connect")], 1.0);
    scrape.expect(
        "modelgate_fallbacks_total",
        &[("reason", "breaker_open")],
        1.0,
    );

    // Breakers: the dead link's is open for acme, the fake's closed.
    let acme = ("org", "acme");
    scrape.expect(
        "modelgate_breaker_state",
        &[acme, at_broken[0], at_broken[1]],
        2.0,
    );
    scrape.expect(
        "modelgate_breaker_state",
        &[acme, at_chat_fake[0], at_chat_fake[1]],
        0.0,
    );
    scrape.expect(
        "modelgate_breaker_transitions_total",
        &[("transition", "opened")],
        1.0,
    );

    // The cache: one hit; the retried and held calls bypassed it.
    scrape.expect("modelgate_cache_requests_total", &[("result", "hit")], 1.0);
    scrape.expect(
        "modelgate_cache_requests_total",
        &[("result", "bypass")],
        2.0,
    );
    assert!(scrape.total("modelgate_cache_stored_bytes_total") > 0.0);

    // The limiter's refusal, the reload, the config served and the build.
    scrape.expect(
        "modelgate_limit_refusals_total",
        &[("scope", "key"), ("limit", "budget")],
        1.0,
    );
    // The first load and the reload.
    scrape.expect(
        "modelgate_config_reloads_total",
        &[("result", "success")],
        2.0,
    );
    scrape.expect(
        "modelgate_config_info",
        &[("checksum", &checksum_of(&next_config))],
        1.0,
    );
    assert_eq!(scrape.named("modelgate_config_info").len(), 1);
    scrape.expect(
        "modelgate_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    // Prometheus asks for OpenMetrics and gets it; the rest (curl, promtool) the classic text.
    let openmetrics = gw
        .send_with(
            http::Method::GET,
            gw.admin_url("/metrics"),
            None,
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4",
            )],
            bytes::Bytes::new(),
        )
        .await;
    assert!(
        openmetrics
            .header("content-type")
            .starts_with("application/openmetrics-text")
    );
    assert!(openmetrics.text().ends_with("# EOF\n"));
    assert!(
        openmetrics
            .text()
            .contains("# TYPE modelgate_requests counter")
    );
    assert!(
        scrape
            .text
            .contains("# TYPE modelgate_requests_total counter")
    );
    if let Err(problems) = testbin::promtool::check_metrics(&scrape.text) {
        panic!(
            "promtool check metrics:\n{problems}\n\nexposition:\n{}",
            scrape.text
        );
    }

    // What the dashboard and alerts also ask about: a call that fails after every attempt (a
    // 5xx), and a config that is rejected (the last good one keeps serving).
    let failing = group(
        "gone",
        &["gone"],
        &[upstream_with(
            "gone",
            &dead.url,
            "      credentials: {secretKeyRef: {name: keys, key: upstream}}\n",
        )],
        &[],
    );
    let last_config = config(&fake, &dead.url, &failing);
    gw.write_config(&last_config);
    gw.wait_for_config(&last_config).await;
    let failed = gw.post("/v1/chat/completions", ask("gone", "ten")).await;
    assert!(failed.status.is_server_error(), "{}", failed.text());
    gw.write_config("apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nspec: [");
    eventually("the malformed config to be rejected", || async {
        Scrape::of(&gw)
            .await
            .value("modelgate_config_reloads_total", &[("result", "failure")])
            .is_some()
    })
    .await;
    let scrape = Scrape::of(&gw).await;
    match testbin::monitoring::check(&scrape.text, |series| {
        !series.starts_with("modelgate_operator_")
    }) {
        Ok(checked) => assert!(checked > 30, "only {checked} selectors checked"),
        Err(problems) => panic!(
            "the dashboard and alerts ask for what the gateway does not export:\n{}\n\nexposition:\n{}",
            problems.join("\n"),
            scrape.text
        ),
    }
}

#[tokio::test]
async fn spend_tags_are_limited_to_what_the_callers_policy_lists_and_logged_with_the_call() {
    let fake = FakeProvider::start().await.unwrap();
    let dead = dead_url();
    let gw = TestGateway::start(&config(&fake, &dead.url, "")).await;
    let gw = &gw;
    let tagged = |tags: &'static str| async move {
        gw.post_with(
            TEAM_KEY,
            &[("x-modelgate-spend-tags", tags)],
            ask("chat", "tagged"),
        )
        .await
    };
    let refused = [
        (
            tagged("stage=train").await,
            "`stage` may be one of embed, generate",
        ),
        (
            tagged("customer=acme").await,
            "does not list the tag `customer`",
        ),
        (tagged("stage").await, "is not `key=value`"),
    ];
    for (answer, says) in &refused {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.error_code(), "invalid_spend_tag");
        assert!(answer.text().contains(says), "{}", answer.text());
    }
    // The test key's org policy lists no spend tags at all.
    let untagged_policy = gw
        .post_with(
            KEY,
            &[("x-modelgate-spend-tags", "stage=embed")],
            ask("chat", "x"),
        )
        .await;
    assert_eq!(untagged_policy.error_code(), "invalid_spend_tag");
    assert_eq!(
        fake.request_count(),
        0,
        "a refused tag never reaches a provider"
    );

    let mut body = ask("chat", "tagged in the body");
    body["metadata"] = json!({"tags": "feature=search-v2"});
    let served = gw
        .post_with(
            TEAM_KEY,
            &[("x-modelgate-spend-tags", "stage=generate")],
            body,
        )
        .await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text());
    let record = gw.decision(served.header("x-modelgate-request-id")).await;
    assert_eq!(
        record["spend_tags"],
        json!({"feature": "search-v2", "stage": "generate"})
    );
    // `metadata` is the client's OpenAI field: it goes upstream as sent.
    assert_eq!(
        fake.requests()[0].body["metadata"],
        json!({"tags": "feature=search-v2"})
    );
}
