//! Leader election: of two operator processes on one Lease exactly one reconciles and publishes;
//! when it dies without releasing the Lease, the other takes over after the lease duration.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use modelgate_crds::ModelGroup;

use crate::support::{
    Operator, OperatorOptions, SETTLE, control_plane, kubectl_apply, wait_condition,
};
use testbin::wait_until;

fn group(name: &str) -> String {
    format!(
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {{name: {name}}}\nspec:\n  models: [{name}]\n  deployments: [{{name: mock, provider: mock, model: mock-1}}]\n"
    )
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("modelgate-operator")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_replicas_publishes_and_the_other_takes_over_when_it_dies() {
    let plane = control_plane();
    let namespace = plane.namespace("leader").await;
    let client = plane.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let a = Operator::start(OperatorOptions {
        identity: "replica-a",
        ..OperatorOptions::new(plane, &namespace)
    })
    .await;
    let b = Operator::start(OperatorOptions {
        identity: "replica-b",
        ..OperatorOptions::new(plane, &namespace)
    })
    .await;
    let elected = wait_until(SETTLE, || async {
        a.metric("modelgate_operator_leader").await + b.metric("modelgate_operator_leader").await
            == 1.0
            && holder(&leases).await.is_some()
    })
    .await;
    assert!(elected, "no single leader:\n{}\n{}", a.logs(), b.logs());
    let (leader, standby, standby_id) = if holder(&leases).await.as_deref() == Some("replica-a") {
        (a, b, "replica-b")
    } else {
        (b, a, "replica-a")
    };
    assert_eq!(leader.metric("modelgate_operator_leader").await, 1.0);

    kubectl_apply(plane, &namespace, &group("first"));
    wait_condition::<ModelGroup>(&client, &namespace, "first", "Ready", "True", None).await;
    assert!(leader.metric("modelgate_operator_publishes_total").await >= 1.0);
    // The standby watches (its caches stay warm) but writes nothing.
    assert_eq!(
        standby.metric("modelgate_operator_reconciles_total").await,
        0.0
    );
    assert_eq!(
        standby.metric("modelgate_operator_publishes_total").await,
        0.0
    );

    // A crash leaves the Lease held; the standby waits it out, then leads. (A busy machine may
    // have moved the Lease before: what counts is that this takeover adds a transition.)
    let transitions = |lease: Lease| lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let before = transitions(leases.get("modelgate-operator").await.unwrap());
    leader.kill();
    let took_over = wait_until(SETTLE, || async {
        holder(&leases).await.as_deref() == Some(standby_id)
            && standby.metric("modelgate_operator_leader").await == 1.0
    })
    .await;
    assert!(
        took_over,
        "the standby never took over:\n{}",
        standby.logs()
    );
    kubectl_apply(plane, &namespace, &group("second"));
    wait_condition::<ModelGroup>(&client, &namespace, "second", "Ready", "True", None).await;
    assert!(standby.metric("modelgate_operator_publishes_total").await >= 1.0);
    let after = transitions(leases.get("modelgate-operator").await.unwrap());
    assert!(after > before, "transitions {before} -> {after}");
}
