//! The operator watching every namespace (no `--namespace`): one operator, its own control plane
//! (a separate test binary, so it cannot touch the namespaces of the scoped tests), each
//! namespace compiled and published on its own, nothing published where there is nothing to
//! serve, and an empty config once a namespace's last object is gone.

// A panic in a test helper is a failed assertion with a backtrace, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The scoped tests' plumbing; this binary uses part of it.
#[allow(dead_code)]
#[path = "k8s/support.rs"]
mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use modelgate_crds::ModelGroup;
use serde_json::Value;
use testbin::wait_until;

use support::{
    MIXED_OBJECTS, Operator, OperatorOptions, SETTLE, control_plane, kubectl, kubectl_apply,
    wait_condition,
};

async fn published_groups(secrets: &Api<Secret>) -> Option<Vec<String>> {
    let secret = secrets.get_opt("modelgate-config").await.unwrap()?;
    let config: Value =
        serde_json::from_slice(&secret.data.as_ref()?.get("config.json")?.0).ok()?;
    Some(config["modelGroups"].as_object()?.keys().cloned().collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_operator_publishes_each_namespace_on_its_own() {
    let plane = control_plane();
    let home = plane.namespace("operator").await;
    let (a, b, idle) = (
        plane.namespace("team-a").await,
        plane.namespace("team-b").await,
        plane.namespace("idle").await,
    );
    let client = plane.client().await;
    let _operator = Operator::start(OperatorOptions {
        cluster_wide: true,
        ..OperatorOptions::new(plane, &home)
    })
    .await;
    kubectl_apply(plane, &a, MIXED_OBJECTS);
    kubectl_apply(
        plane,
        &b,
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {name: other}\nspec:\n  models: [other]\n  deployments: [{name: mock, provider: mock, model: mock-1}]\n",
    );
    wait_condition::<ModelGroup>(&client, &a, "chat", "Ready", "True", None).await;
    wait_condition::<ModelGroup>(&client, &a, "broken", "Ready", "False", None).await;
    wait_condition::<ModelGroup>(&client, &b, "other", "Ready", "True", None).await;

    let in_a: Api<Secret> = Api::namespaced(client.clone(), &a);
    let in_b: Api<Secret> = Api::namespaced(client.clone(), &b);
    let in_idle: Api<Secret> = Api::namespaced(client.clone(), &idle);
    assert_eq!(
        published_groups(&in_a).await,
        Some(vec![format!("{a}/chat")])
    );
    assert_eq!(
        published_groups(&in_b).await,
        Some(vec![format!("{b}/other")])
    );
    assert!(in_a.get_opt("team-key").await.unwrap().is_some());
    assert!(in_idle.get_opt("modelgate-config").await.unwrap().is_none());

    // The last object of a namespace goes: its data planes get an empty config, not a stale one.
    let (ok, _, stderr) = kubectl(plane, &["delete", "-n", &b, "modelgroup", "other"]);
    assert!(ok, "{stderr}");
    let emptied = wait_until(SETTLE, || async {
        published_groups(&in_b).await == Some(Vec::new())
    })
    .await;
    assert!(emptied, "the deleted group is still published");
    assert_eq!(
        published_groups(&in_a).await,
        Some(vec![format!("{a}/chat")])
    );
}
