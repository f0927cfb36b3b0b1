//! Spend in status: with the data planes' Redis, the operator reports each key's spend (and what
//! is left of its budget) this period, and each RoutingPolicy's orgs' and teams' spend;
//! `kubectl get vk` and `kubectl get rp` show them, and its `/metrics` has them as series (the
//! dashboard's budget burn). Redis may come up after the operator.

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
    let operator = Operator::start(OperatorOptions {
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

    // The same spend and budget as series, for the dashboard's budget burn and the alert on a
    // budget near its limit; the dashboard's and alerts' operator series are all in the scrape.
    let key = [
        ("namespace", namespace.as_str()),
        ("scope", "key"),
        ("name", "team"),
    ];
    let exposition = operator.exposition().await;
    assert_eq!(
        sample(&exposition, "modelgate_operator_spend_usd", &key),
        Some(2.5)
    );
    assert_eq!(
        sample(&exposition, "modelgate_operator_budget_usd", &key),
        Some(10.0)
    );
    match testbin::monitoring::check(&exposition, |series| {
        series.starts_with("modelgate_operator_")
    }) {
        Ok(checked) => assert!(checked >= 4, "only {checked} selectors checked"),
        Err(problems) => panic!(
            "the dashboard and alerts ask for what the operator does not export:\n{}\n\n{exposition}",
            problems.join("\n")
        ),
    }
    if let Err(problems) = testbin::promtool::check_metrics(&exposition) {
        panic!("promtool check metrics:\n{problems}\n\nexposition:\n{exposition}");
    }

    // A deleted key's series go with it.
    let (ok, _, stderr) = kubectl(plane, &["delete", "vk", "team", "-n", &namespace]);
    assert!(ok, "{stderr}");
    assert!(
        wait_until(SETTLE, || async {
            let exposition = operator.exposition().await;
            sample(&exposition, "modelgate_operator_spend_usd", &key).is_none()
        })
        .await
    );
}

/// The value of the sample `name` with exactly `labels` in an exposition.
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    testbin::exposition::samples(exposition)
        .into_iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_without_a_budget_and_policies_show_their_spend_this_month() {
    let plane = control_plane();
    let namespace = plane.namespace("spend-all").await;
    let client = plane.client().await;
    let redis = RedisServer::start().await;
    let state = redis.url();
    let operator = Operator::start(OperatorOptions {
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

    // Spend without a budget is a series too, with no budget beside it.
    let exposition = operator.exposition().await;
    let team = [
        ("namespace", namespace.as_str()),
        ("scope", "team"),
        ("name", "ml"),
    ];
    assert_eq!(
        sample(&exposition, "modelgate_operator_spend_usd", &team),
        Some(4.0)
    );
    assert_eq!(
        sample(&exposition, "modelgate_operator_budget_usd", &team),
        None
    );
}
