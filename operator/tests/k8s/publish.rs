//! Publishing is checksum-stable: a change that does not change the compiled config writes
//! nothing, and a restarted operator rewrites nothing (no config, status or key Secret churn).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::ListParams};
use modelgate_crds::{ModelGroup, VirtualKey};

use crate::support::{
    MIXED_OBJECTS, Operator, OperatorOptions, SETTLE, control_plane, kubectl_apply, wait_condition,
};
use testbin::wait_until;

/// resourceVersions of everything the operator writes in `namespace`.
async fn versions(client: &kube::Client, namespace: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for s in secrets.list(&ListParams::default()).await.unwrap() {
        all.push((
            format!("Secret/{}", s.metadata.name.unwrap()),
            s.metadata.resource_version.unwrap(),
        ));
    }
    let groups: Api<ModelGroup> = Api::namespaced(client.clone(), namespace);
    for g in groups.list(&ListParams::default()).await.unwrap() {
        all.push((
            format!("ModelGroup/{}", g.metadata.name.unwrap()),
            g.metadata.resource_version.unwrap(),
        ));
    }
    let keys: Api<VirtualKey> = Api::namespaced(client.clone(), namespace);
    for k in keys.list(&ListParams::default()).await.unwrap() {
        all.push((
            format!("VirtualKey/{}", k.metadata.name.unwrap()),
            k.metadata.resource_version.unwrap(),
        ));
    }
    all
}

/// Waits until the operator has finished at least `count` successful reconciles.
async fn reconciled(operator: &Operator, count: f64) {
    let done = wait_until(SETTLE, || async {
        operator
            .metric("modelgate_operator_reconciles_total{result=\"success\"}")
            .await
            >= count
    })
    .await;
    assert!(done, "fewer than {count} reconciles:\n{}", operator.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_rewritten_when_the_config_does_not_change_or_the_operator_restarts() {
    let plane = control_plane();
    let namespace = plane.namespace("publish").await;
    let client = plane.client().await;
    let operator = Operator::start(OperatorOptions::new(plane, &namespace)).await;
    kubectl_apply(plane, &namespace, MIXED_OBJECTS);
    wait_condition::<ModelGroup>(&client, &namespace, "chat", "Ready", "True", None).await;
    wait_condition::<ModelGroup>(&client, &namespace, "broken", "Ready", "False", None).await;
    wait_condition::<VirtualKey>(&client, &namespace, "team", "Ready", "True", None).await;
    let publishes = operator.metric("modelgate_operator_publishes_total").await;
    assert!(publishes >= 1.0);
    let config_version = |v: &[(String, String)]| {
        v.iter()
            .find(|(n, _)| n == "Secret/modelgate-config")
            .cloned()
            .unwrap()
    };
    let before = versions(&client, &namespace).await;

    // A spec change that compiles to the same config (weight 1 is the default): the object's
    // status follows its new generation, but the config Secret is not rewritten.
    kubectl_apply(
        plane,
        &namespace,
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {name: chat}\nspec:\n  models: [chat]\n  deployments: [{name: mock, provider: mock, model: mock-1, weight: 1}]\n",
    );
    let observed = wait_until(SETTLE, || async {
        let api: Api<ModelGroup> = Api::namespaced(client.clone(), &namespace);
        let chat = api.get("chat").await.unwrap();
        chat.metadata.generation == Some(2)
            && chat.status.and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    assert!(
        observed,
        "generation 2 never observed:\n{}",
        operator.logs()
    );
    assert_eq!(
        operator.metric("modelgate_operator_publishes_total").await,
        publishes
    );
    let after = versions(&client, &namespace).await;
    assert_eq!(
        config_version(&before),
        config_version(&after),
        "an unchanged config was rewritten"
    );

    // A restart (clean, so the lease is released) rewrites nothing either.
    assert!(operator.terminate().success());
    let before = after;
    let restarted = Operator::start(OperatorOptions {
        identity: "operator-b",
        ..OperatorOptions::new(plane, &namespace)
    })
    .await;
    reconciled(&restarted, 1.0).await;
    let after = versions(&client, &namespace).await;
    assert_eq!(
        before,
        after,
        "a restart rewrote objects:\n{}",
        restarted.logs()
    );
    assert_eq!(
        restarted.metric("modelgate_operator_publishes_total").await,
        0.0
    );
    assert_eq!(
        restarted
            .metric("modelgate_operator_status_writes_total")
            .await,
        0.0
    );
    assert_eq!(
        restarted
            .metric("modelgate_operator_key_secrets_generated_total")
            .await,
        0.0
    );

    // And a real change is published once.
    kubectl_apply(
        plane,
        &namespace,
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {name: chat}\nspec:\n  models: [chat, chat-2]\n  deployments: [{name: mock, provider: mock, model: mock-1}]\n",
    );
    let published = wait_until(SETTLE, || async {
        restarted.metric("modelgate_operator_publishes_total").await >= 1.0
    })
    .await;
    assert!(
        published,
        "the change was not published:\n{}",
        restarted.logs()
    );
}
