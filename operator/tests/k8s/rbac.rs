//! Least privilege: `charts/modelgate/files/operator-rbac.yaml` names exact verbs and resources,
//! and without a RoleBinding in a tenant namespace the operator reads no Secret there and says
//! which binding is missing. (That it does its whole job with exactly the chart's permissions, as
//! its ServiceAccount, is `install.rs`.)

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use modelgate_crds::ModelGroup;

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

/// Applies the rules and binds `user` as the chart binds the operator: the cluster role
/// cluster-wide, the leader-election role in `home`, and the tenant role in each of `tenants`.
fn bind(plane: &testbin::ControlPlane, user: &str, home: &str, tenants: &[&str]) {
    let (ok, _, stderr) = kubectl(plane, &["apply", "-n", home, "-f", RBAC]);
    assert!(ok, "{stderr}");
    let subject = format!("[{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]");
    kubectl_apply(
        plane,
        home,
        &format!(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {user}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: modelgate-operator}}
subjects: {subject}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: modelgate-operator-leader-election}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: modelgate-operator-leader-election}}
subjects: {subject}
"#
        ),
    );
    for tenant in tenants {
        kubectl_apply(
            plane,
            tenant,
            &format!(
                r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: modelgate-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: modelgate-operator-tenant}}
subjects: {subject}
"#
            ),
        );
    }
}

/// A tenant namespace nobody bound the operator in: its objects say which RoleBinding is
/// missing, nothing is published there, and the namespace that is bound is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_tenant_binding_the_objects_name_the_missing_binding() {
    let plane = control_plane();
    let namespace = plane.namespace("rbac-bound").await;
    let unbound = plane.namespace("rbac-unbound").await;
    let user = format!("operator-{namespace}");
    bind(plane, &user, &namespace, &[&namespace]);
    let kubeconfig = plane.kubeconfig_for(&user, &[]);
    let _operator = Operator::start(OperatorOptions {
        kubeconfig: &kubeconfig,
        extra: &[
            "--namespace",
            &unbound,
            "--service-account",
            "modelgate:operator",
        ],
        ..OperatorOptions::new(plane, &namespace)
    })
    .await;
    kubectl_apply(plane, &namespace, MIXED_OBJECTS);
    kubectl_apply(plane, &unbound, MIXED_OBJECTS);
    let client = plane.client().await;
    wait_condition::<ModelGroup>(&client, &namespace, "chat", "Ready", "True", None).await;
    let denied = wait_condition::<ModelGroup>(
        &client,
        &unbound,
        "chat",
        "Ready",
        "False",
        Some("SecretAccessDenied"),
    )
    .await;
    let message = denied["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "kubectl create rolebinding modelgate-operator -n {unbound} \
             --clusterrole=modelgate-operator-tenant --serviceaccount=modelgate:operator"
        )),
        "{message}"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &unbound);
    assert!(secrets.get_opt("modelgate-config").await.unwrap().is_none());
}
