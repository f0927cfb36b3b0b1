//! Spend in status: with the data planes' Redis, the operator reports each key's spend (and what
//! is left of its budget) this period, and each RoutingPolicy's orgs' and teams' spend;
//! `kubectl get vk` and `kubectl get rp` show them. Redis may come up after the operator.

use modelgate_crds::{
    RoutingPolicy, VirtualKey,
    common::BudgetPeriod,
    spend::{BudgetWindow, Meter, Subject, counter_key},
};
use testbin::{redis::RedisServer, wait_until};

use crate::support::{
    Operator, OperatorOptions, SETTLE, control_plane, get_json, kubectl, kubectl_apply,
    wait_condition,
};

#[tokio::test(flavor = "multi_thread")]
async fn virtual_key_status_shows_spend_and_remaining_budget_from_the_state_store() {
    let plane = control_plane();
    let namespace = plane.namespace("spend").await;
    let client = plane.client().await;
    // The operator starts before Redis does, and reports spend once Redis is up.
    let port = testbin::free_port();
    let state = format!("redis://127.0.0.1:{port}/");
    let _operator = Operator::start(OperatorOptions {
        extra: &["--state", &state, "--spend-refresh-interval", "200ms"],
        ..OperatorOptions::new(plane, &namespace)
    })
    .await;
    kubectl_apply(
        plane,
        &namespace,
        "apiVersion: modelgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {name: team}\nspec:\n  budget: {limit: 10, period: monthly}\n",
    );
    wait_condition::<VirtualKey>(&client, &namespace, "team", "Ready", "True", None).await;
    let _redis = RedisServer::start_on(port).await;
    let period = BudgetWindow::containing(BudgetPeriod::Monthly, jiff::Timestamp::now()).id;
    let status_is = |spend: f64, remaining: f64| {
        let client = client.clone();
        let namespace = namespace.clone();
        let period = period.clone();
        async move {
            let Some(key) = get_json::<VirtualKey>(&client, &namespace, "team").await else {
                return false;
            };
            let status = &key["status"];
            status["spend"].as_f64() == Some(spend)
                && status["remaining"].as_f64() == Some(remaining)
                && status["budgetPeriod"] == period.as_str()
        }
    };
    assert!(wait_until(SETTLE, || status_is(0.0, 10.0)).await);

    // What the data planes settle (here written directly, as their Lua script does) shows up.
    let counter = counter_key(
        Subject::Key {
            namespace: &namespace,
            name: "team",
        },
        Meter::Budget { period: &period },
    );
    let mut connection = redis::Client::open(state.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("HINCRBY")
        .arg(&counter)
        .arg("spent")
        .arg(2_500_000_000_i64)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(wait_until(SETTLE, || status_is(2.5, 7.5)).await);

    let (ok, table, stderr) = kubectl(plane, &["get", "vk", "-n", &namespace]);
    assert!(ok, "{stderr}");
    assert!(
        table.contains("SPEND") && table.contains("REMAINING"),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with("team")).unwrap();
    assert!(row.contains("2.5") && row.contains("7.5"), "{row}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_without_a_budget_and_policies_show_their_spend_this_month() {
    let plane = control_plane();
    let namespace = plane.namespace("spend-all").await;
    let client = plane.client().await;
    let redis = RedisServer::start().await;
    let state = redis.url();
    let _operator = Operator::start(OperatorOptions {
        extra: &["--state", &state, "--spend-refresh-interval", "200ms"],
        ..OperatorOptions::new(plane, &namespace)
    })
    .await;
    kubectl_apply(
        plane,
        &namespace,
        "apiVersion: modelgate.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {name: ml}\nspec:\n  teams: [ml]\n---\napiVersion: modelgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {name: free}\nspec:\n  team: ml\n",
    );
    wait_condition::<VirtualKey>(&client, &namespace, "free", "Ready", "True", None).await;
    let month = BudgetWindow::containing(BudgetPeriod::Monthly, jiff::Timestamp::now()).id;
    // What the data planes count for a key and a team without a budget (their Lua script's
    // HINCRBY, written directly here).
    let org = namespace.clone();
    let mut connection = redis::Client::open(state.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for (subject, nanos) in [
        (
            Subject::Key {
                namespace: &namespace,
                name: "free",
            },
            1_250_000_000_i64,
        ),
        (
            Subject::Team {
                namespace: &namespace,
                org: &org,
                team: "ml",
            },
            4_000_000_000,
        ),
    ] {
        let _: i64 = redis::cmd("HINCRBY")
            .arg(counter_key(subject, Meter::Budget { period: &month }))
            .arg("spent")
            .arg(nanos)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    let shown = || async {
        let key = get_json::<VirtualKey>(&client, &namespace, "free").await;
        let policy = get_json::<RoutingPolicy>(&client, &namespace, "ml").await;
        let (Some(key), Some(policy)) = (key, policy) else {
            return false;
        };
        key["status"]["spend"].as_f64() == Some(1.25)
            && key["status"]["budgetPeriod"] == month.as_str()
            && key["status"].get("remaining").is_none()
            && policy["status"]["spend"]
                == serde_json::json!([{"scope": "team", "name": "ml", "spend": 4.0, "period": month}])
    };
    assert!(wait_until(SETTLE, shown).await);
    let (ok, table, stderr) = kubectl(plane, &["get", "rp", "-n", &namespace]);
    assert!(ok, "{stderr}");
    let row = table.lines().find(|l| l.starts_with("ml")).unwrap();
    assert!(table.contains("SPEND") && row.contains('4'), "{table}");
    let (ok, table, stderr) = kubectl(plane, &["get", "vk", "-n", &namespace]);
    assert!(ok, "{stderr}");
    let row = table.lines().find(|l| l.starts_with("free")).unwrap();
    assert!(row.contains("1.25"), "{table}");
}
