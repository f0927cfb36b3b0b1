//! Least privilege: the operator does its whole job as a user bound to exactly the rules in
//! `charts/modelgate/files/operator-rbac.yaml`, and those rules grant nothing broader.

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::Api;
use modelgate_crds::{ModelGroup, VirtualKey};

use crate::support::{
    MIXED_OBJECTS, Operator, OperatorOptions, control_plane, kubectl, kubectl_apply, wait_condition,
};

const RBAC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/modelgate/files/operator-rbac.yaml"
);

#[test]
fn the_rules_name_exact_verbs_and_resources() {
    let text = std::fs::read_to_string(RBAC).unwrap();
    let list = |field: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(field)?.trim().strip_prefix('['))
            .flat_map(|l| l.trim_end_matches(']').split(','))
            .map(|item| item.trim().trim_matches('"').to_owned())
            .collect()
    };
    let verbs = list("verbs:");
    let resources: Vec<String> = list("- apiGroups:")
        .into_iter()
        .chain(list("resources:"))
        .collect();
    assert!(
        verbs.len() >= 10 && resources.len() >= 10,
        "{verbs:?} {resources:?}"
    );
    assert!(
        !verbs.iter().chain(&resources).any(|v| v.contains('*')),
        "wildcards in {RBAC}"
    );
    for verb in &verbs {
        assert!(
            ["get", "list", "watch", "create", "patch", "update"].contains(&verb.as_str()),
            "{RBAC} grants {verb}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_works_with_exactly_the_documented_permissions() {
    let plane = control_plane();
    let namespace = plane.namespace("rbac").await;
    let user = format!("operator-{namespace}");
    let (ok, _, stderr) = kubectl(plane, &["apply", "-n", &namespace, "-f", RBAC]);
    assert!(ok, "{stderr}");
    let bindings = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {user}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: modelgate-operator}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: modelgate-operator-leader-election}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: modelgate-operator-leader-election}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
"#
    );
    kubectl_apply(plane, &namespace, &bindings);
    let kubeconfig = plane.kubeconfig_for(&user, &[]);

    // The user can do nothing the operator does not need.
    let can = |verb: &str, resource: &str| {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let (_, out, _) = kubectl(
            plane,
            &[
                "auth",
                "can-i",
                verb,
                resource,
                "--subresource",
                subresource,
                "-n",
                &namespace,
                "--as",
                &user,
            ],
        );
        out.trim() == "yes"
    };
    assert!(can("patch", "modelgroups.modelgate.io/status") && can("create", "secrets"));
    assert!(!can("update", "modelgroups.modelgate.io/status"));
    for (verb, resource) in [
        ("update", "modelgroups.modelgate.io"),
        ("delete", "secrets"),
        ("update", "secrets"),
        ("create", "modelgroups.modelgate.io"),
        ("delete", "leases.coordination.k8s.io"),
        ("list", "pods"),
    ] {
        assert!(!can(verb, resource), "the operator may {verb} {resource}");
    }

    let operator = Operator::start(OperatorOptions {
        kubeconfig: &kubeconfig,
        ..OperatorOptions::new(plane, &namespace)
    })
    .await;
    kubectl_apply(plane, &namespace, MIXED_OBJECTS);
    let client = plane.client().await;
    wait_condition::<ModelGroup>(&client, &namespace, "chat", "Ready", "True", None).await;
    wait_condition::<ModelGroup>(&client, &namespace, "broken", "Ready", "False", None).await;
    wait_condition::<VirtualKey>(&client, &namespace, "team", "Ready", "True", None).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    assert!(secrets.get_opt("modelgate-config").await.unwrap().is_some());
    assert!(secrets.get_opt("team-key").await.unwrap().is_some());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    assert!(
        leases
            .get_opt("modelgate-operator")
            .await
            .unwrap()
            .is_some()
    );
    let logs = operator.logs();
    assert!(
        !logs.contains("forbidden") && !logs.contains("Forbidden"),
        "{logs}"
    );
    assert_eq!(
        operator
            .metric("modelgate_operator_reconcile_failures_total")
            .await,
        0.0
    );
}
