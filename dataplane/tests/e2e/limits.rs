//! Spend control end to end: per-call cost, budgets that concurrent requests cannot overspend
//! (one process on the memory store; three processes sharing a real Redis), RPM/TPM limits,
//! 402/429/503 answers, failed calls costing nothing and cut or abandoned streams charged for what
//! they delivered, Redis going away and coming back,
//! and spend surviving a restart.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use fake_provider::{FakeProvider, Script};
use http::{Method, StatusCode};
use modelgate_crds::{
    common::BudgetPeriod,
    spend::{BudgetWindow, Meter, Subject, counter_key},
};
use modelgate_dataplane::limits::{RedisStore, Store, store::BudgetState};
use serde_json::{Value, json};

use crate::{
    fleet::{RedisServer, Replica, SETTLE, config_file, three_replicas},
    support::*,
};

/// USD per 1M tokens: every token costs exactly 1,000,000 nano-dollars.
const PRICE: f64 = 1000.0;
const NANOS_PER_TOKEN: i64 = 1_000_000;
const MAX_TOKENS: i64 = 100;
const TEAM_KEY: &str = "sk-mg-e2e-teammate-key-02";

fn messages() -> Value {
    json!([{"role": "user", "content": "hi"}])
}

fn request() -> Value {
    json!({"model": "chat", "messages": messages(), "max_tokens": MAX_TOKENS})
}

/// The gateway's prompt estimate of [`request`] (JSON bytes / 4), which the fake also bills.
fn prompt_tokens() -> i64 {
    (messages().to_string().len() / 4) as i64
}

fn worst_case_nanos() -> i64 {
    (prompt_tokens() + MAX_TOKENS) * NANOS_PER_TOKEN
}

fn usd(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}

/// Two keys of org `acme`, team `ml`, with `key_extra` on the first; one priced group on the
/// fake; and `policies` (RoutingPolicy documents; the team `ml` is declared unless they do).
fn config(fake: &FakeProvider, key_extra: &str, policies: &str) -> String {
    let team = if policies.contains("teams: [ml]") {
        ""
    } else {
        "apiVersion: modelgate.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {name: ml}\nspec: {teams: [ml]}\n---\n"
    };
    format!(
        r#"{TENANCY}{team}apiVersion: v1
kind: Secret
metadata: {{name: keys, {TEST_SECRET_META}}}
stringData: {{test: {KEY}, mate: {TEAM_KEY}, upstream: sk-upstream-0001}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: e2e}}
spec:
  org: acme
  team: ml
  keySecretRef: {{name: keys, key: test}}
{key_extra}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: mate}}
spec:
  org: acme
  team: ml
  keySecretRef: {{name: keys, key: mate}}
---
{}{policies}"#,
        priced_chat_group(fake, PRICE)
    )
}

fn budget_counter(subject: Subject<'_>) -> String {
    let window = BudgetWindow::containing(BudgetPeriod::Daily, jiff::Timestamp::now());
    counter_key(subject, Meter::Budget { period: &window.id })
}

const KEY_SUBJECT: Subject<'static> = Subject::Key {
    namespace: "default",
    name: "e2e",
};

async fn post(url: &str, key: &str, body: &Value) -> Answer {
    let client = client();
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(format!("{url}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    use http_body_util::BodyExt;
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn cost_nanos(answer: &Answer) -> i64 {
    let usd: f64 = answer.header("x-modelgate-cost").parse().unwrap();
    (usd * 1e9).round() as i64
}

/// 32 requests released together (held upstream once admitted), spread over `bases` with keys
/// taking turns from `keys`, against a budget with room for `room` worst cases: no more than
/// `room` are admitted, the rest get 402, and once all are done the budget holds exactly the
/// sum of the real costs with nothing reserved.
async fn budget_race(
    fake: &FakeProvider,
    bases: &[String],
    keys: &[&str],
    room: i64,
    store: &dyn Store,
    counter: &str,
) {
    for _ in 0..32 {
        fake.push(Script::Hold);
    }
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let base = bases[i % bases.len()].clone();
        let key = keys[i % keys.len()].to_owned();
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            let answer = post(&base, &key, &request()).await;
            if answer.status != StatusCode::OK {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            answer
        }));
    }
    eventually("every request to be held upstream or refused", || {
        std::future::ready(fake.request_count() + refused.load(Ordering::SeqCst) == 32)
    })
    .await;
    let admitted = fake.request_count() as i64;
    // Nothing settles while they are held, so exactly the worst cases that fit are admitted.
    assert_eq!(
        admitted, room,
        "{admitted} admitted with room for {room} worst cases"
    );
    let held = store.budget(counter).await.unwrap();
    assert_eq!(held.reserved, admitted * worst_case_nanos());
    fake.release(32);
    let mut spent = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        match answer.status {
            StatusCode::OK => spent += cost_nanos(&answer),
            StatusCode::PAYMENT_REQUIRED => assert_eq!(answer.error_code(), "budget_exceeded"),
            other => panic!("unexpected {other}: {}", answer.text()),
        }
    }
    assert!(spent > 0);
    let mut last = BudgetState::default();
    let settled = tokio::time::timeout(SETTLE, async {
        loop {
            last = store.budget(counter).await.unwrap();
            if last == (BudgetState { spent, reserved: 0 }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "expected {spent} spent and nothing reserved, found {last:?}"
    );
}

/// The key's extra spec, the policies and the budget counter that put a daily budget with room
/// for 9.5 worst cases on `scope` (`key`, `team` or `org`).
fn scoped_budget(scope: &str) -> (String, String, String) {
    let limit = usd(worst_case_nanos() * 9 + worst_case_nanos() / 2);
    let budget = format!("{{budget: {{limit: {limit}, period: daily}}}}");
    let policy = |name: &str, selector: &str| {
        format!(
            "apiVersion: modelgate.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {{name: {name}}}\nspec:\n  {selector}\n  limits: {budget}\n"
        )
    };
    match scope {
        "key" => (
            format!("  budget: {{limit: {limit}, period: daily}}"),
            String::new(),
            budget_counter(KEY_SUBJECT),
        ),
        "team" => (
            String::new(),
            policy("ml", "teams: [ml]"),
            budget_counter(Subject::Team {
                namespace: "default",
                org: "acme",
                team: "ml",
            }),
        ),
        _ => (
            String::new(),
            policy("acme", "orgs: [acme]"),
            budget_counter(Subject::Org {
                namespace: "default",
                org: "acme",
            }),
        ),
    }
}

/// A key budget is the one key's; team and org budgets are shared by both keys of the team.
fn keys_for(scope: &str) -> &'static [&'static str] {
    if scope == "key" {
        &[KEY]
    } else {
        &[KEY, TEAM_KEY]
    }
}

/// One process on the memory store.
async fn memory_race(scope: &str) {
    let fake = FakeProvider::start().await.unwrap();
    let (key_extra, policies, counter) = scoped_budget(scope);
    let gw = TestGateway::start(&config(&fake, &key_extra, &policies)).await;
    let store = gw.gateway.limits_store().clone();
    let bases = [gw.url("")];
    budget_race(&fake, &bases, keys_for(scope), 9, store.as_ref(), &counter).await;
}

#[tokio::test]
async fn one_process_never_overspends_a_key_budget_under_concurrency() {
    memory_race("key").await;
}

#[tokio::test]
async fn one_process_never_overspends_a_team_budget() {
    memory_race("team").await;
}

#[tokio::test]
async fn one_process_never_overspends_an_org_budget() {
    memory_race("org").await;
}

/// Three replicas sharing one Redis: the budget of `scope` is shared by all of them.
async fn fleet_race(scope: &str) {
    let fake = FakeProvider::start().await.unwrap();
    let (key_extra, policies, counter) = scoped_budget(scope);
    let (redis, _dir, replicas) = three_replicas(&config(&fake, &key_extra, &policies)).await;
    let bases: Vec<String> = replicas.iter().map(|r| r.url("")).collect();
    let store = RedisStore::connect(&redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    budget_race(&fake, &bases, keys_for(scope), 9, &store, &counter).await;
}

#[tokio::test]
async fn three_replicas_on_redis_never_overspend_a_key_budget() {
    fleet_race("key").await;
}

#[tokio::test]
async fn three_replicas_on_redis_never_overspend_a_team_budget() {
    fleet_race("team").await;
}

#[tokio::test]
async fn three_replicas_on_redis_never_overspend_an_org_budget() {
    fleet_race("org").await;
}

#[tokio::test]
async fn an_rpm_limit_holds_across_three_replicas() {
    let fake = FakeProvider::start().await.unwrap();
    let (_redis, _dir, replicas) = three_replicas(&config(&fake, "  rpm: 10", "")).await;
    let (admitted, reached) = in_one_minute(|_| async {
        let before = fake.request_count();
        let mut admitted = 0;
        for i in 0..30 {
            let answer = post(&replicas[i % 3].url(""), KEY, &request()).await;
            match answer.status {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_eq!(answer.error_code(), "rpm_limit_exceeded");
                    assert_eq!(answer.header("x-modelgate-limit"), "key-rpm");
                    let retry: u64 = answer.header("retry-after").parse().unwrap();
                    assert!((1..=60).contains(&retry), "retry-after {retry}");
                }
                other => panic!("unexpected {other}: {}", answer.text()),
            }
        }
        (admitted, fake.request_count() - before)
    })
    .await;
    assert_eq!(admitted, 10, "exactly the limit, no more and no less");
    assert_eq!(reached, 10, "a refused request reached the provider");
}

#[tokio::test]
async fn a_tpm_limit_bounds_the_tokens_admitted_in_a_minute_across_three_replicas() {
    let fake = FakeProvider::start().await.unwrap();
    let (_redis, _dir, replicas) = three_replicas(&config(&fake, "  tpm: 1000", "")).await;
    // About 60 prompt tokens each: 30 of them are far more than 1000 tokens.
    let content = "tell me more ".repeat(18);
    let long = json!({"model": "chat", "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": content}]});
    let (tokens, refused) = in_one_minute(|_| async {
        let (mut tokens, mut refused) = (0, 0);
        for i in 0..30 {
            let answer = post(&replicas[i % 3].url(""), KEY, &long).await;
            match answer.status {
                StatusCode::OK => {
                    tokens += answer.json()["usage"]["total_tokens"].as_i64().unwrap();
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_eq!(answer.error_code(), "tpm_limit_exceeded");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {}", answer.text()),
            }
        }
        (tokens, refused)
    })
    .await;
    // Every request sets max_tokens, so the estimate bounds it and there is no overshoot; and a
    // request is refused only when its estimate no longer fits, so what was admitted comes
    // within one estimate of the limit.
    let estimate = (json!([{"role": "user", "content": content}])
        .to_string()
        .len()
        / 4) as i64
        + MAX_TOKENS;
    assert!(
        tokens <= 1000,
        "{tokens} tokens admitted under a TPM of 1000"
    );
    assert!(
        tokens > 1000 - estimate,
        "{tokens} tokens admitted: refused while {estimate} more would have fit"
    );
    assert!(refused > 0);
}

#[tokio::test]
async fn a_budget_refusal_is_a_402_naming_the_budget_with_retry_after_until_the_reset() {
    let fake = FakeProvider::start().await.unwrap();
    let limit = usd(worst_case_nanos() / 2);
    let gw = TestGateway::start(&config(
        &fake,
        &format!("  budget: {{limit: {limit}, period: daily}}"),
        "",
    ))
    .await;
    let answer = post(&gw.url(""), KEY, &request()).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "budget_exceeded");
    assert_eq!(error["type"], "insufficient_quota");
    assert!(
        error["message"].as_str().unwrap().contains("key budget"),
        "{error}"
    );
    let retry: i64 = answer.header("retry-after").parse().unwrap();
    let reset = BudgetWindow::containing(BudgetPeriod::Daily, jiff::Timestamp::now())
        .resets_at
        .unwrap();
    assert!((reset - jiff::Timestamp::now().as_second() - retry).abs() <= 2);
    assert_eq!(answer.header("x-modelgate-limit"), "key-budget");
    assert_eq!(fake.request_count(), 0);
    // A smaller worst case fits.
    let small = json!({"model": "chat", "messages": messages(), "max_tokens": 1});
    assert_eq!(post(&gw.url(""), KEY, &small).await.status, StatusCode::OK);
}

/// A streamed request read frame by frame: returns the response head and the body still open.
async fn open_stream(url: &str, key: &str) -> (StatusCode, hyper::body::Incoming) {
    let mut body = request();
    body["stream"] = json!(true);
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(format!("{url}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    (response.status(), response.into_body())
}

/// The spend settled for the request with this id, from its decision record.
async fn recorded_cost(gw: &TestGateway, request_id: &str) -> Value {
    gw.decision(request_id).await
}

#[tokio::test]
async fn failed_calls_cost_nothing_and_streams_that_delivered_text_are_charged_for_it() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start(&config(&fake, "  budget: {limit: 100, period: daily}", "")).await;
    let store = gw.gateway.limits_store().clone();
    let counter = budget_counter(KEY_SUBJECT);
    let spent = || {
        let (store, counter) = (store.clone(), counter.clone());
        async move { store.budget(&counter).await.unwrap() }
    };

    // No output, no cost: a refused call, and a stream that broke before its first text.
    fake.push(Script::status(400));
    let failed = post(&gw.url(""), KEY, &request()).await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    let mut stream = request();
    stream["stream"] = json!(true);
    fake.push(Script::CutStreamAfter { chunks: 0 });
    let broken = post(&gw.url(""), KEY, &stream).await;
    assert_eq!(broken.status, StatusCode::BAD_GATEWAY, "{}", broken.text());
    eventually("both reservations to be released", || async {
        spent().await == BudgetState::default()
    })
    .await;

    // An upstream cut after text: what was relayed is charged, estimated (no usage arrived).
    fake.push(Script::CutStreamAfter { chunks: 3 });
    let cut = post(&gw.url(""), KEY, &stream).await;
    assert_eq!(cut.status, StatusCode::OK);
    let record = recorded_cost(&gw, cut.header("x-modelgate-request-id")).await;
    assert_eq!(record["usage_estimated"], true, "{record}");
    let cost = record["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0, "{record}");
    eventually("the cut stream to be charged", || async {
        let state = spent().await;
        state.reserved == 0 && usd(state.spent) == cost
    })
    .await;

    // A complete stream is costed at the provider's usage although the client did not ask for
    // it, and the client does not get the usage chunk the gateway asked for on its behalf.
    let before = spent().await.spent;
    let streamed = post(&gw.url(""), KEY, &stream).await;
    assert_eq!(streamed.status, StatusCode::OK);
    assert!(
        !streamed.text().contains("\"usage\":{"),
        "{}",
        streamed.text()
    );
    let upstream = fake.requests().last().unwrap().body.clone();
    assert_eq!(upstream["stream_options"]["include_usage"], true);
    let record = recorded_cost(&gw, streamed.header("x-modelgate-request-id")).await;
    assert!(record.get("usage_estimated").is_none(), "{record}");
    eventually("the stream to be settled at its real cost", || async {
        let state = spent().await;
        state.reserved == 0 && state.spent > before && state.spent - before < worst_case_nanos()
    })
    .await;
}

/// A client that reads the answer and leaves before its last event cannot drain a budget for
/// free: every abandoned stream is charged for the text it received, until the budget is gone.
#[tokio::test]
async fn a_client_that_leaves_before_the_last_event_is_charged_until_its_budget_runs_out() {
    let fake = FakeProvider::start().await.unwrap();
    // Room to admit one call's worst case, and a tenth of it more: each abandoned stream's
    // charge (at least a token) eats into that tenth.
    let budget = usd(worst_case_nanos() + worst_case_nanos() / 10);
    let gw = TestGateway::start(&config(
        &fake,
        &format!("  budget: {{limit: {budget}, period: daily}}"),
        "",
    ))
    .await;
    let mut refused = None;
    for attempt in 0..20 {
        fake.push(Script::StallAfter { chunks: 4 });
        let (status, mut body) = open_stream(&gw.url(""), KEY).await;
        if status != StatusCode::OK {
            refused = Some((attempt, status));
            break;
        }
        // Read until text arrived, then hang up without waiting for the rest.
        let mut read = Vec::new();
        while !String::from_utf8_lossy(&read).contains("\"content\":\"") {
            let frame = http_body_util::BodyExt::frame(&mut body)
                .await
                .unwrap()
                .unwrap();
            read.extend_from_slice(frame.data_ref().unwrap());
        }
        drop(body);
        eventually("the abandoned stream to be recorded", || {
            std::future::ready(gw.decisions().len() == attempt + 1)
        })
        .await;
        let record = gw.decisions().pop().unwrap();
        assert_eq!(record["error_code"], "client_disconnected", "{record}");
        assert!(record["cost_usd"].as_f64().unwrap() > 0.0, "{record}");
    }
    let (attempt, status) = refused.expect("the budget ran out");
    assert!(attempt >= 1, "refused before any stream was served");
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
}

#[tokio::test]
async fn redis_going_away_fails_closed_then_recovers_and_fails_open_when_asked() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let fake = FakeProvider::start().await.unwrap();
    let (_dir, path) = config_file(&config(&fake, "  budget: {limit: 100, period: daily}", ""));
    let state = redis.url();
    let closed = Replica::start(&path, &["--state", &state]).await;
    let open = Replica::start(&path, &["--state", &state, "--state-fail-mode", "open"]).await;
    assert_eq!(
        post(&closed.url(""), KEY, &request()).await.status,
        StatusCode::OK
    );

    redis.kill();
    for _ in 0..3 {
        let answer = post(&closed.url(""), KEY, &request()).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.text()
        );
        assert_eq!(answer.error_code(), "limits_unavailable");
        assert_eq!(answer.header("retry-after"), "1");
        assert_eq!(
            post(&open.url(""), KEY, &request()).await.status,
            StatusCode::OK
        );
    }

    let redis = RedisServer::start_on(port).await;
    let mut recovered = false;
    let deadline = tokio::time::Instant::now() + SETTLE;
    while tokio::time::Instant::now() < deadline {
        let answer = post(&closed.url(""), KEY, &request()).await;
        assert!(
            matches!(
                answer.status,
                StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE
            ),
            "{}",
            answer.text()
        );
        if answer.status == StatusCode::OK {
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "the replica never recovered after Redis came back"
    );
    // One call admitted after the restart: exactly its cost is spent, settled once.
    let store = RedisStore::connect(&redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    let counter = budget_counter(KEY_SUBJECT);
    eventually("the call after recovery to settle", || {
        let store = &store;
        let counter = counter.clone();
        async move {
            let s = store.budget(&counter).await.unwrap();
            s.reserved == 0 && s.spent > 0
        }
    })
    .await;
    let spent = store.budget(&counter).await.unwrap().spent;
    assert!(
        spent < worst_case_nanos(),
        "settled more than one call: {spent}"
    );
}

#[tokio::test]
async fn spend_survives_a_restart_on_the_memory_store() {
    let fake = FakeProvider::start().await.unwrap();
    let limit = usd(worst_case_nanos() * 3);
    let (dir, path) = config_file(&config(
        &fake,
        &format!("  budget: {{limit: {limit}, period: total}}"),
        "",
    ));
    let spend_file = dir.path().join("spend.json");
    let flags = ["--state-file", spend_file.to_str().unwrap()];
    let replica = Replica::start(&path, &flags).await;
    let mut served = 0;
    while post(&replica.url(""), KEY, &request()).await.status == StatusCode::OK {
        served += 1;
        assert!(served < 100, "the budget never ran out");
    }
    replica.terminate();
    let restarted = Replica::start(&path, &flags).await;
    let answer = post(&restarted.url(""), KEY, &request()).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "spend was forgotten: {}",
        answer.text()
    );
}

#[tokio::test]
async fn a_cooldown_one_replica_starts_is_applied_by_the_others() {
    let redis = RedisServer::start().await;
    let primary = FakeProvider::start().await.unwrap();
    let backup = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}",
        group(
            "chat",
            &["chat"],
            &[upstream("primary", &primary.base_url(), 1)],
            &["backup"]
        ),
        group(
            "backup",
            &["backup"],
            &[upstream("backup", &backup.base_url(), 1)],
            &[]
        ),
    );
    let (_dir, path) = config_file(&config_with(&groups));
    let state = redis.url();
    let first = Replica::start(&path, &["--state", &state]).await;
    let second = Replica::start(&path, &["--state", &state]).await;

    // The primary tells the first replica to back off for a minute; it falls back.
    primary.push(Script::Status {
        status: 429,
        body: None,
        retry_after: Some("60".to_owned()),
    });
    let answer = post(&first.url(""), KEY, &chat("chat")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.header("x-modelgate-deployment"), "backup");
    eventually("the second replica to apply the cooldown", || async {
        second.metric("modelgate_remote_cooldowns_total").await >= 1.0
    })
    .await;
    // The second replica never asks the primary: it goes straight to the backup.
    let answer = post(&second.url(""), KEY, &chat("chat")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.header("x-modelgate-deployment"), "backup");
    assert_eq!(primary.request_count(), 1);
}

#[tokio::test]
async fn settling_a_request_twice_on_redis_counts_it_once() {
    use modelgate_dataplane::limits::store::{Admission, BudgetCharge, MeterCharge, Settlement};
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(&redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    let admission = Admission {
        id: "req_twice".to_owned(),
        now_ms: 0,
        reservation_ttl_ms: 60_000,
        budgets: vec![BudgetCharge {
            counter: "mg:twice".to_owned(),
            limit: 1_000,
            amount: 100,
            expire_at_ms: 0,
        }],
        rates: Vec::new(),
    };
    store.admit(&admission).await.unwrap();
    let settlement = Settlement {
        id: "req_twice".to_owned(),
        now_ms: 0,
        budgets: vec![("mg:twice".to_owned(), 40)],
        rates: Vec::new(),
        meters: vec![MeterCharge {
            counter: "mg:meter".to_owned(),
            cost: 40,
            expire_at_ms: 4_102_444_800_000,
        }],
    };
    // A settle retried after a reconnect, or sent twice, lands once.
    store.settle(&settlement).await.unwrap();
    store.settle(&settlement).await.unwrap();
    assert_eq!(
        store.budget("mg:twice").await.unwrap(),
        BudgetState {
            spent: 40,
            reserved: 0
        }
    );
    assert_eq!(store.budget("mg:meter").await.unwrap().spent, 40);
}

#[tokio::test]
async fn a_deployment_quota_is_shared_by_the_fleet() {
    let limited = FakeProvider::start().await.unwrap();
    let spare = FakeProvider::start().await.unwrap();
    // Cost-based routing tries the cheap, quota-limited deployment first, then the spare.
    let groups = format!(
        "{}{}",
        group(
            "chat",
            &["chat"],
            &[
                upstream_with(
                    "limited",
                    &limited.base_url(),
                    "      rpm: 4\n      pricing: {input: 1, output: 1}\n",
                ),
                upstream_with(
                    "spare",
                    &spare.base_url(),
                    "      pricing: {input: 100, output: 100}\n",
                ),
            ],
            &[],
        ),
        policy("acme", "  orgs: [acme]\n  strategy: cost-based"),
    );
    let (_redis, _dir, replicas) = three_replicas(&config_with(&groups)).await;
    let (first, second) = (&replicas[0], &replicas[1]);
    let (spilled, reached) = in_one_minute(|_| async {
        let before = limited.request_count();
        for _ in 0..4 {
            let answer = post(&first.url(""), KEY, &chat("chat")).await;
            assert_eq!(
                answer.header("x-modelgate-deployment"),
                "limited",
                "{}",
                answer.text()
            );
        }
        // Wait for the first replica to share its counts, then for the second to read them.
        let shared = first.metric("modelgate_fleet_usage_syncs_total").await;
        eventually("the first replica to share its usage", || async {
            first.metric("modelgate_fleet_usage_syncs_total").await > shared
        })
        .await;
        let read = second.metric("modelgate_fleet_usage_syncs_total").await;
        eventually("the second replica to read the fleet's usage", || async {
            second.metric("modelgate_fleet_usage_syncs_total").await > read
        })
        .await;
        let mut spilled = Vec::new();
        for _ in 0..3 {
            let answer = post(&second.url(""), KEY, &chat("chat")).await;
            spilled.push(answer.header("x-modelgate-deployment").to_owned());
        }
        (spilled, limited.request_count() - before)
    })
    .await;
    assert_eq!(
        spilled, ["spare"; 3],
        "the second replica saw the quota used up"
    );
    assert_eq!(reached, 4, "the fleet went past the deployment's quota");
}

#[tokio::test]
async fn a_replica_starts_while_redis_is_down_and_connects_when_it_comes_up() {
    let fake = FakeProvider::start().await.unwrap();
    let port = testbin::free_port();
    let (_dir, path) = config_file(&config(&fake, "  budget: {limit: 100, period: daily}", ""));
    let state = format!("redis://127.0.0.1:{port}/");
    let replica = Replica::start(&path, &["--state", &state]).await;
    let answer = post(&replica.url(""), KEY, &request()).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    assert_eq!(answer.error_code(), "limits_unavailable");

    let _redis = RedisServer::start_on(port).await;
    let mut served = false;
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !served && tokio::time::Instant::now() < deadline {
        served = post(&replica.url(""), KEY, &request()).await.status == StatusCode::OK;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "the replica never connected to Redis");
}

/// Threat model T7: every path a request can take (chat or embeddings, streamed or not, served
/// by the primary or a fallback) reserves and settles against the same key counter, and a key at
/// its cap is refused on every one of them before any provider is called.
#[tokio::test]
async fn every_path_counts_against_the_same_budget_and_is_refused_at_the_cap() {
    let primary = FakeProvider::start().await.unwrap();
    let backup = FakeProvider::start().await.unwrap();
    let priced = "      pricing: {input: 1000, output: 1000}\n";
    let groups = |limit: f64| {
        format!(
            "{}{}{}",
            group(
                "chat",
                &["chat"],
                &[upstream_with("primary", &primary.base_url(), priced)],
                &["backup"]
            ),
            group(
                "backup",
                &["backup"],
                &[upstream_with("backup", &backup.base_url(), priced)],
                &[]
            ),
            group(
                "embed",
                &["embed"],
                &[upstream_with("embedder", &primary.base_url(), priced)],
                &[]
            ),
        ) + &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: capped-keys, labels: {{modelgate.io/virtual-key: \"true\"}}}}\nstringData: {{k: {TEAM_KEY}}}\n---\napiVersion: modelgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {{name: capped}}\nspec:\n  org: acme\n  keySecretRef: {{name: capped-keys, key: k}}\n  budget: {{limit: {limit}, period: daily}}\n---\n"
        )
    };
    let gw = TestGateway::start(&config_with(&groups(100.0))).await;
    let store = gw.gateway.limits_store().clone();
    let counter = budget_counter(Subject::Key {
        namespace: "default",
        name: "capped",
    });
    let chat_body = |stream: bool| {
        json!({"model": "chat", "stream": stream, "max_tokens": 20,
        "messages": [{"role": "user", "content": "paths"}]})
    };
    let embed_body = json!({"model": "embed", "input": ["paths"]});
    let paths: Vec<(&str, &str, Value, bool)> = vec![
        (
            "chat, primary",
            "/v1/chat/completions",
            chat_body(false),
            false,
        ),
        (
            "stream, primary",
            "/v1/chat/completions",
            chat_body(true),
            false,
        ),
        (
            "chat, fallback",
            "/v1/chat/completions",
            chat_body(false),
            true,
        ),
        (
            "stream, fallback",
            "/v1/chat/completions",
            chat_body(true),
            true,
        ),
        ("embeddings", "/v1/embeddings", embed_body.clone(), false),
    ];
    let mut spent = 0;
    for (path, route, body, fail_primary) in &paths {
        if *fail_primary {
            // Every retry of the primary fails: the backup serves.
            for _ in 0..8 {
                primary.push(Script::status(500));
            }
        }
        let answer = gw.post_as(route, Some(TEAM_KEY), body.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        let served_by = match (*route, *fail_primary) {
            ("/v1/embeddings", _) => "embedder",
            (_, true) => "backup",
            (_, false) => "primary",
        };
        assert_eq!(answer.header("x-modelgate-deployment"), served_by, "{path}");
        primary.reset();
        let before = spent;
        eventually(&format!("{path} to be settled"), || {
            let store = store.clone();
            let counter = counter.clone();
            async move {
                let state = store.budget(&counter).await.unwrap();
                state.reserved == 0 && state.spent > before
            }
        })
        .await;
        spent = store.budget(&counter).await.unwrap().spent;
    }

    // The key is now capped at what it spent: every path is refused, and no provider called.
    gw.write_config(&config_with(&groups(usd(spent))));
    gw.wait_for_config(&config_with(&groups(usd(spent)))).await;
    let calls = (primary.request_count(), backup.request_count());
    for (path, route, body, _) in &paths {
        let answer = gw.post_as(route, Some(TEAM_KEY), body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::PAYMENT_REQUIRED,
            "{path}: {}",
            answer.text()
        );
        assert_eq!(answer.error_code(), "budget_exceeded", "{path}");
    }
    assert_eq!((primary.request_count(), backup.request_count()), calls);
}

/// A deployment with no price cannot bound a budget: a budgeted key is never sent to one,
/// unless its policy says unpriced calls are fine; a key without a budget always may.
#[tokio::test]
async fn a_budgeted_key_is_refused_unpriced_deployments_unless_its_policy_allows_them() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}",
        group(
            "free",
            &["free"],
            &[upstream("unpriced", &fake.base_url(), 1)],
            &[]
        ),
        group(
            "mixed",
            &["mixed"],
            &[
                upstream("unpriced", &fake.base_url(), 100),
                upstream_with(
                    "priced",
                    &fake.base_url(),
                    "      credentials: {secretKeyRef: {name: keys, key: upstream}}\n      pricing: {input: 1, output: 1}\n",
                ),
            ],
            &[]
        ),
    );
    let budgeted = config(&fake, "  budget: {limit: 100, period: daily}", &groups);
    let gw = TestGateway::start(&budgeted).await;
    let free = post(
        &gw.url(""),
        KEY,
        &json!({"model": "free", "messages": messages()}),
    )
    .await;
    assert_eq!(
        (free.status, free.error_code().as_str()),
        (StatusCode::FORBIDDEN, "unpriced_deployment"),
        "{}",
        free.text()
    );
    for _ in 0..5 {
        let mixed = post(
            &gw.url(""),
            KEY,
            &json!({"model": "mixed", "messages": messages()}),
        )
        .await;
        assert_eq!(
            (mixed.status, mixed.header("x-modelgate-deployment")),
            (StatusCode::OK, "priced"),
            "only the priced deployment serves a budgeted key"
        );
    }
    // The teammate's key has no budget: unpriced calls are its own business.
    let unbudgeted = post(
        &gw.url(""),
        TEAM_KEY,
        &json!({"model": "free", "messages": messages()}),
    )
    .await;
    assert_eq!(unbudgeted.status, StatusCode::OK);

    let allowed = config(
        &fake,
        "  budget: {limit: 100, period: daily}",
        &format!(
            "{groups}apiVersion: modelgate.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {{name: ml}}\nspec: {{teams: [ml], allowUnpriced: true}}\n---\n"
        ),
    );
    gw.write_config(&allowed);
    gw.wait_for_config(&allowed).await;
    let free = post(
        &gw.url(""),
        KEY,
        &json!({"model": "free", "messages": messages()}),
    )
    .await;
    assert_eq!(free.status, StatusCode::OK, "{}", free.text());
}

/// The store is gone between a call's admit and its settle: the cost is kept and settled when
/// the store is back, exactly once.
#[tokio::test]
async fn a_settle_made_while_redis_is_down_lands_exactly_once_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let fake = FakeProvider::start().await.unwrap();
    let (_dir, path) = config_file(&config(&fake, "  budget: {limit: 100, period: daily}", ""));
    let replica = Replica::start(&path, &["--state", &redis.url()]).await;
    fake.push(Script::Hold);
    let url = replica.url("");
    let call = tokio::spawn(async move { post(&url, KEY, &request()).await });
    eventually("the call to be admitted and held upstream", || {
        std::future::ready(fake.request_count() == 1)
    })
    .await;
    redis.kill();
    fake.release(1);
    let answer = call.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let cost = (answer.header("x-modelgate-cost").parse::<f64>().unwrap() * 1e9).round() as i64;
    assert!(cost > 0);
    eventually("the settle to be queued", || async {
        replica.metric("modelgate_limit_settles_pending").await == 1.0
    })
    .await;

    let redis = RedisServer::start_on(port).await;
    let store = RedisStore::connect(&redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    let counter = budget_counter(KEY_SUBJECT);
    eventually("the queue to drain into the store", || async {
        replica.metric("modelgate_limit_settles_pending").await == 0.0
    })
    .await;
    let state = store.budget(&counter).await.unwrap();
    assert_eq!(
        state,
        BudgetState {
            spent: cost,
            reserved: 0
        },
        "charged once, nothing held"
    );
}

/// The spend counter of `subject` for the current calendar month.
fn monthly_counter(subject: Subject<'_>) -> String {
    let window = BudgetWindow::containing(BudgetPeriod::Monthly, jiff::Timestamp::now());
    counter_key(subject, Meter::Budget { period: &window.id })
}

#[tokio::test]
async fn spend_is_counted_for_every_key_team_and_org_without_a_budget() {
    let redis = RedisServer::start().await;
    let fake = FakeProvider::start().await.unwrap();
    // No budget anywhere: the org policy only has a rate limit, the team policy nothing.
    let org_policy = "apiVersion: modelgate.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {name: acme}\nspec:\n  orgs: [acme]\n  limits: {rpm: 1000}\n---\n";
    let (_dir, path) = config_file(&config(&fake, "", org_policy));
    let replica = Replica::start(&path, &["--state", &redis.url()]).await;
    let mut own = 0;
    for _ in 0..2 {
        let answer = post(&replica.url(""), KEY, &request()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        own += cost_nanos(&answer);
    }
    let mate = post(&replica.url(""), TEAM_KEY, &request()).await;
    let everyone = own + cost_nanos(&mate);
    assert!(own > 0);

    let store = RedisStore::connect(&redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    let counters = [
        (monthly_counter(KEY_SUBJECT), own),
        (
            monthly_counter(Subject::Team {
                namespace: "default",
                org: "acme",
                team: "ml",
            }),
            everyone,
        ),
        (
            monthly_counter(Subject::Org {
                namespace: "default",
                org: "acme",
            }),
            everyone,
        ),
    ];
    for (counter, spent) in &counters {
        // Counted after the answer went out, in the background.
        eventually("the spend to be counted", || async {
            store.budget(counter).await.unwrap().spent == *spent
        })
        .await;
        assert_eq!(store.budget(counter).await.unwrap().reserved, 0);
    }
    // A month's counter is dropped a while after the month ends, like a budget's.
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&counters[0].0)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 7 * 24 * 3600 * 1000, "{ttl}");
}
