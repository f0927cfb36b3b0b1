//! The response cache end to end: tenant scoping (org by default, narrowed to the key, widened
//! to a share group), opt-outs and policy, errors and cut streams never stored, a hit costing
//! nothing against budgets while counting against RPM, and Redis shared by replicas and going
//! away (a miss, never an error).

use fake_provider::{FakeProvider, Script};
use http::StatusCode;
use modelgate_dataplane::CacheBackend;
use serde_json::{Value, json};

use crate::{
    fleet::{RedisServer, Replica, config_file},
    support::*,
};

const ACME_2: &str = "sk-mg-e2e-acme-second-key";
const GLOBEX: &str = "sk-mg-e2e-globex-key-0001";

/// Keys `e2e` and `acme-2` of org acme (namespace `default`, with `teams` as their spec lines),
/// and `globex` of org globex (its own namespace); the group `chat` on the fake in both; and
/// `policies` (acme's, then globex's after a `---globex---` line).
fn config(fake: &FakeProvider, policies: &str) -> String {
    config_with_teams(fake, policies, ("", ""))
}

fn config_with_teams(fake: &FakeProvider, policies: &str, teams: (&str, &str)) -> String {
    let (acme_policies, globex_policies) = policies
        .split_once("---globex---\n")
        .unwrap_or((policies, ""));
    let (team, team_2) = teams;
    let globex = format!(
        "{}{}apiVersion: v1\nkind: Secret\nmetadata: {{name: keys, {TEST_SECRET_META}}}\n\
         stringData: {{g: {GLOBEX}, upstream: sk-upstream-0001}}\n---\napiVersion: modelgate.io/v1alpha1\n\
         kind: VirtualKey\nmetadata: {{name: globex}}\nspec: {{keySecretRef: {{name: keys, key: g}}}}\n---\n",
        priced_chat_group(fake, 1000.0),
        globex_policies,
    )
    .replace("metadata: {name: ", "metadata: {namespace: globex, name: ");
    format!(
        r#"{TENANCY}apiVersion: v1
kind: Secret
metadata: {{name: keys, {TEST_SECRET_META}}}
stringData: {{a: {KEY}, a2: {ACME_2}, upstream: sk-upstream-0001}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: e2e}}
spec: {{keySecretRef: {{name: keys, key: a}}, budget: {{limit: 100, period: daily}}, rpm: 1000{team}}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: acme-2}}
spec: {{keySecretRef: {{name: keys, key: a2}}{team_2}}}
---
{}{acme_policies}{globex}"#,
        priced_chat_group(fake, 1000.0)
    )
}

fn policy(name: &str, selector: &str, cache: &str) -> String {
    format!(
        "apiVersion: modelgate.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {{name: {name}}}\nspec:\n  {selector}\n  cache: {cache}\n---\n"
    )
}

async fn cached_gateway(config: &str) -> TestGateway {
    TestGateway::start_cached(config, CacheBackend::default()).await
}

fn question(text: &str) -> Value {
    json!({"model": "chat", "messages": [{"role": "user", "content": text}]})
}

async fn ask(gw: &TestGateway, key: &str, body: &Value) -> Answer {
    gw.post_as("/v1/chat/completions", Some(key), body.clone())
        .await
}

#[tokio::test]
async fn entries_are_shared_within_an_org_and_never_across_orgs() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = cached_gateway(&config(&fake, "")).await;
    let q = question("scoping");
    assert_eq!(ask(&gw, KEY, &q).await.header("x-modelgate-cache"), "miss");
    assert_eq!(
        ask(&gw, ACME_2, &q).await.header("x-modelgate-cache"),
        "hit"
    );
    assert_eq!(
        ask(&gw, GLOBEX, &q).await.header("x-modelgate-cache"),
        "miss"
    );
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn a_policy_narrows_the_scope_to_the_key_or_widens_it_to_a_share_group() {
    let fake = FakeProvider::start().await.unwrap();
    let narrow = policy("acme", "orgs: [acme]", "{scope: key}");
    let gw = cached_gateway(&config(&fake, &narrow)).await;
    let q = question("narrow");
    ask(&gw, KEY, &q).await;
    assert_eq!(
        ask(&gw, ACME_2, &q).await.header("x-modelgate-cache"),
        "miss"
    );
    assert_eq!(ask(&gw, KEY, &q).await.header("x-modelgate-cache"), "hit");

    // Two teams of acme, narrowed to their keys by acme's policy, share what their own
    // policies put in one share group.
    let fake = FakeProvider::start().await.unwrap();
    let shared = format!(
        "{}{}{}",
        narrow,
        policy(
            "alpha",
            "teams: [alpha]",
            "{scope: group, shareGroup: partners}"
        ),
        policy(
            "beta",
            "teams: [beta]",
            "{scope: group, shareGroup: partners}"
        ),
    );
    let gw = cached_gateway(&config_with_teams(
        &fake,
        &shared,
        (", team: alpha", ", team: beta"),
    ))
    .await;
    let q = question("wide");
    ask(&gw, KEY, &q).await;
    assert_eq!(
        ask(&gw, ACME_2, &q).await.header("x-modelgate-cache"),
        "hit"
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn a_policy_can_turn_the_cache_off_or_exempt_sampled_requests() {
    let fake = FakeProvider::start().await.unwrap();
    let policies = format!(
        "{}---globex---\n{}",
        policy("acme", "orgs: [acme]", "{bypassAboveTemperature: 0.5}"),
        policy("globex", "orgs: [globex]", "{enabled: false}")
    );
    let gw = cached_gateway(&config(&fake, &policies)).await;
    let mut sampled = question("sampled");
    sampled["temperature"] = json!(0.9);
    ask(&gw, KEY, &sampled).await;
    assert_eq!(
        ask(&gw, KEY, &sampled).await.header("x-modelgate-cache"),
        "bypass"
    );
    let mut cool = question("cool");
    cool["temperature"] = json!(0.2);
    ask(&gw, KEY, &cool).await;
    assert_eq!(
        ask(&gw, KEY, &cool).await.header("x-modelgate-cache"),
        "hit"
    );
    let off = question("off");
    ask(&gw, GLOBEX, &off).await;
    assert_eq!(
        ask(&gw, GLOBEX, &off).await.header("x-modelgate-cache"),
        "bypass"
    );
}

#[tokio::test]
async fn errors_and_cut_streams_are_never_stored() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = cached_gateway(&config(&fake, "")).await;
    let q = question("failing");
    fake.push(Script::status(400));
    assert_eq!(ask(&gw, KEY, &q).await.status, StatusCode::BAD_REQUEST);
    let after = ask(&gw, KEY, &q).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.header("x-modelgate-cache"), "miss");

    let mut stream = question("cut");
    stream["stream"] = json!(true);
    fake.push(Script::CutStreamAfter { chunks: 3 });
    let cut = ask(&gw, KEY, &stream).await;
    assert!(cut.text().contains("error"), "{}", cut.text());
    let calls = fake.request_count();
    let again = ask(&gw, KEY, &stream).await;
    assert_eq!(again.header("x-modelgate-cache"), "miss");
    assert_eq!(
        fake.request_count(),
        calls + 1,
        "a cut stream was served from the cache"
    );
}

#[tokio::test]
async fn a_hit_costs_nothing_and_still_counts_against_rpm() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = cached_gateway(&config(&fake, "")).await;
    let store = gw.gateway.limits_store().clone();
    let window = modelgate_crds::spend::BudgetWindow::containing(
        modelgate_crds::common::BudgetPeriod::Daily,
        jiff::Timestamp::now(),
    );
    let subject = modelgate_crds::spend::Subject::Key {
        namespace: "default",
        name: "e2e",
    };
    let budget = modelgate_crds::spend::counter_key(
        subject,
        modelgate_crds::spend::Meter::Budget { period: &window.id },
    );
    let rpm_counter = || {
        let minute = jiff::Timestamp::now().as_second().div_euclid(60);
        modelgate_crds::spend::counter_key(
            subject,
            modelgate_crds::spend::Meter::Requests { minute },
        )
    };
    let (spent, counted, rpm) = in_one_minute(|run| {
        let (gw, store) = (&gw, &store);
        let budget = &budget;
        async move {
            let q = question(&format!("free {run}"));
            let miss = ask(gw, KEY, &q).await;
            assert_ne!(miss.header("x-modelgate-cost"), "0.000000000");
            let spent = store.budget(budget).await.unwrap();
            let rpm = rpm_counter();
            let counted = store.rate(&rpm).await.unwrap();
            let hit = ask(gw, KEY, &q).await;
            assert_eq!(hit.header("x-modelgate-cache"), "hit");
            assert_eq!(hit.header("x-modelgate-cost"), "0.000000000");
            (spent, counted, rpm)
        }
    })
    .await;
    assert_eq!(
        store.budget(&budget).await.unwrap(),
        spent,
        "a hit costs nothing"
    );
    assert_eq!(
        store.rate(&rpm).await.unwrap(),
        counted + 1,
        "the hit was not counted"
    );
}

#[tokio::test]
async fn replicas_share_entries_through_redis_and_a_redis_outage_is_a_miss() {
    let mut redis = RedisServer::start().await;
    let fake = FakeProvider::start().await.unwrap();
    let (_dir, path) = config_file(&config(&fake, ""));
    let url = redis.url();
    let first = Replica::start(&path, &["--cache", &url]).await;
    let second = Replica::start(&path, &["--cache", &url]).await;
    let client = client();
    let ask_replica = |replica: &Replica, text: &str| {
        let request = http::Request::post(replica.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {ACME_2}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                question(text).to_string(),
            )))
            .unwrap();
        let client = client.clone();
        async move {
            let response = client.request(request).await.unwrap();
            let status = response.status();
            let cache = response.headers()["x-modelgate-cache"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, cache)
        }
    };
    assert_eq!(ask_replica(&first, "shared").await.1, "miss");
    eventually("the entry to reach Redis", || async {
        ask_replica(&second, "shared").await.1 == "hit"
    })
    .await;
    let calls = fake.request_count();

    redis.kill();
    let (status, cache) = ask_replica(&second, "shared").await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "miss"));
    assert_eq!(fake.request_count(), calls + 1);
}

#[tokio::test]
async fn a_policy_can_keep_hits_out_of_rpm() {
    let fake = FakeProvider::start().await.unwrap();
    let policies = policy("acme", "orgs: [acme]", "{hitsCountAgainstRpm: false}");
    let gw = cached_gateway(&config(&fake, &policies)).await;
    let store = gw.gateway.limits_store().clone();
    let subject = modelgate_crds::spend::Subject::Key {
        namespace: "default",
        name: "e2e",
    };
    let (counted, rpm) = in_one_minute(|run| {
        let (gw, store) = (&gw, &store);
        async move {
            let q = question(&format!("uncounted {run}"));
            let minute = jiff::Timestamp::now().as_second().div_euclid(60);
            let rpm = modelgate_crds::spend::counter_key(
                subject,
                modelgate_crds::spend::Meter::Requests { minute },
            );
            ask(gw, KEY, &q).await;
            let counted = store.rate(&rpm).await.unwrap();
            for _ in 0..3 {
                assert_eq!(ask(gw, KEY, &q).await.header("x-modelgate-cache"), "hit");
            }
            (counted, rpm)
        }
    })
    .await;
    assert_eq!(
        store.rate(&rpm).await.unwrap(),
        counted,
        "a hit was counted"
    );
}
