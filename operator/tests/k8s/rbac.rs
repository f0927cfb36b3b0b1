//! Least privilege: the operator does its whole job as a user bound to exactly the rules in
//! `charts/modelgate/files/operator-rbac.yaml`, those rules grant nothing broader (a golden
//! `kubectl auth can-i --list`), and without a RoleBinding in a tenant namespace it reads no Secret
//! there and says which binding is missing.

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

/// `kubectl auth can-i --list` for `user` in `namespace`, compared with a golden file
/// (`UPDATE_GOLDEN=1` rewrites it).
fn assert_can_i_matches(plane: &testbin::ControlPlane, user: &str, namespace: &str, golden: &str) {
    let (ok, list, stderr) = kubectl(
        plane,
        &["auth", "can-i", "--list", "-n", namespace, "--as", user],
    );
    assert!(ok, "{stderr}");
    let path = format!("{}/tests/k8s/golden/{golden}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &list).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(list, want, "{path} differs (UPDATE_GOLDEN=1 rewrites it)");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_works_with_exactly_the_documented_permissions() {
    let plane = control_plane();
    let namespace = plane.namespace("rbac").await;
    let elsewhere = plane.namespace("rbac-other").await;
    let user = format!("operator-{namespace}");
    bind(plane, &user, &namespace, &[&namespace]);
    let kubeconfig = plane.kubeconfig_for(&user, &[]);

    // What it may do where it is bound, and that Secrets elsewhere are out of reach.
    assert_can_i_matches(plane, &user, &namespace, "operator-tenant-namespace.txt");
    assert_can_i_matches(plane, &user, &elsewhere, "operator-other-namespace.txt");
    let can = |verb: &str, resource: &str, namespace: &str| {
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
                namespace,
                "--as",
                &user,
            ],
        );
        out.trim() == "yes"
    };
    assert!(can("patch", "modelgroups.modelgate.io/status", &namespace));
    assert!(can("create", "secrets", &namespace) && can("watch", "secrets", &namespace));
    for (verb, resource, ns) in [
        (
            "update",
            "modelgroups.modelgate.io/status",
            namespace.as_str(),
        ),
        ("update", "modelgroups.modelgate.io", &namespace),
        ("delete", "secrets", &namespace),
        ("update", "secrets", &namespace),
        ("create", "modelgroups.modelgate.io", &namespace),
        ("delete", "leases.coordination.k8s.io", &namespace),
        ("list", "pods", &namespace),
        ("list", "secrets", &elsewhere),
        ("get", "secrets", &elsewhere),
    ] {
        assert!(
            !can(verb, resource, ns),
            "the operator may {verb} {resource} in {ns}"
        );
    }
    let (_, everywhere, _) = kubectl(
        plane,
        &[
            "auth",
            "can-i",
            "list",
            "secrets",
            "--all-namespaces",
            "--as",
            &user,
        ],
    );
    assert_eq!(everywhere.trim(), "no", "no cluster-wide list of Secrets");

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
