//! `helm install` as the README says it, into a real API server of this test's own: every object
//! of the release exists, the chart's ServiceAccounts hold exactly the permissions their
//! golden files list, the operator does its whole job with its ServiceAccount's token, the gateway
//! reads its config Secret and nothing else, `helm upgrade` of the CRD chart updates a CRD, and
//! `helm uninstall` keeps the CRDs.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::ListParams};
use modelgate_crds::{ModelGroup, VirtualKey};
use serde_json::Value;
use testbin::ControlPlane;

use crate::{
    chart::{CRDS_CHART, objects},
    release::{
        RELEASE_NAMESPACE, install_from_readme, installed_objects, readme_block, run_script,
        start_operator_pod,
    },
    support::{helm, kubectl, wait_condition},
};

const OPERATOR: &str = "system:serviceaccount:modelgate:modelgate-operator";
const GATEWAY: &str = "system:serviceaccount:modelgate:modelgate-gateway";

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_install_works_with_exactly_the_charts_permissions_and_upgrades() {
    let plane = ControlPlane::start_private(false).await;
    install_from_readme(&plane);
    let installed = installed_objects(&plane);
    every_object_exists(&plane, &installed);
    let elsewhere = "other-namespace";
    let (ok, _, stderr) = kubectl(&plane, &["create", "namespace", elsewhere]);
    assert!(ok, "{stderr}");

    assert_can_i_matches(
        &plane,
        OPERATOR,
        RELEASE_NAMESPACE,
        "operator-sa-release-namespace.txt",
    );
    assert_can_i_matches(
        &plane,
        OPERATOR,
        elsewhere,
        "operator-sa-other-namespace.txt",
    );
    assert_can_i_matches(
        &plane,
        GATEWAY,
        RELEASE_NAMESPACE,
        "gateway-sa-release-namespace.txt",
    );
    operator_is_refused_what_it_does_not_need(&plane, elsewhere);

    let operator = start_operator_pod(&plane, &installed).await;
    run_script(&plane, &readme_block("apply"));
    let client = plane.client().await;
    for name in ["chat", "chat-backup"] {
        wait_condition::<ModelGroup>(&client, RELEASE_NAMESPACE, name, "Ready", "True", None).await;
    }
    wait_condition::<VirtualKey>(
        &client,
        RELEASE_NAMESPACE,
        "search-team",
        "Ready",
        "True",
        None,
    )
    .await;
    // Its webhook certificate issued into the release namespace, and the chart's webhook
    // registration trusting it.
    let trusted = testbin::wait_until(crate::support::SETTLE, || async {
        let (_, bundle, _) = kubectl(
            &plane,
            &[
                "get",
                "mutatingwebhookconfiguration",
                "modelgate-injector",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ],
        );
        !bundle.trim().is_empty()
    })
    .await;
    assert!(trusted, "caBundle never set:\n{}", operator.logs());
    let logs = operator.logs();
    assert!(!logs.contains("orbidden"), "{logs}");
    assert_eq!(
        operator
            .metric("modelgate_operator_reconcile_failures_total")
            .await,
        0.0
    );

    the_gateway_reads_its_config_and_no_other_secret(&plane).await;
    an_upgrade_of_the_crd_chart_updates_the_crd(&plane);
    an_upgrade_of_the_chart_changes_the_workloads(&plane);
    uninstalling_the_crd_chart_keeps_the_crds_and_the_objects(&plane);
}

/// Every object `helm get manifest` lists is in the API server.
fn every_object_exists(plane: &ControlPlane, installed: &[Value]) {
    let kinds: Vec<String> = installed
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "Deployment/modelgate-operator",
        "Deployment/modelgate-gateway",
        "Service/modelgate-gateway",
        "PodDisruptionBudget/modelgate-gateway",
        "ServiceAccount/modelgate-operator",
        "ServiceAccount/modelgate-gateway",
        "ClusterRole/modelgate-operator",
        "ClusterRole/modelgate-operator-tenant",
        "ClusterRoleBinding/modelgate-operator",
        "Role/modelgate-operator-leader-election",
        "RoleBinding/modelgate-operator-leader-election",
        "RoleBinding/modelgate-operator-tenant",
        "Role/modelgate-gateway",
        "RoleBinding/modelgate-gateway",
        "MutatingWebhookConfiguration/modelgate-injector",
        "Service/modelgate-webhook",
        "ClusterRole/modelgate-sidecar",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} not in the release: {kinds:?}"
        );
    }
    for object in installed {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(RELEASE_NAMESPACE);
        let (ok, _, stderr) = kubectl(plane, &["get", kind, name, "-n", namespace]);
        assert!(ok, "{kind}/{name} was not created: {stderr}");
    }
    for crd in ["modelgroups", "routingpolicies", "virtualkeys"] {
        let (ok, _, stderr) = kubectl(plane, &["get", "crd", &format!("{crd}.modelgate.io")]);
        assert!(ok, "{stderr}");
    }
}

/// `kubectl auth can-i --list` as `user` in `namespace`, compared with a golden file
/// (`UPDATE_GOLDEN=1`, or `make golden`, rewrites it). The API server lists the rules of several
/// bindings in no fixed order, so rows and the verbs in each are sorted first.
fn assert_can_i_matches(plane: &ControlPlane, user: &str, namespace: &str, golden: &str) {
    let (ok, list, stderr) = kubectl(
        plane,
        &["auth", "can-i", "--list", "-n", namespace, "--as", user],
    );
    assert!(ok, "{stderr}");
    let list = normalized_rules(&list);
    let path = format!("{}/tests/k8s/golden/{golden}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &list).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(list, want, "{path} differs (UPDATE_GOLDEN=1 rewrites it)");
}

/// One rule a line, `resources | non-resource URLs | resource names | verbs`, verbs sorted, lines
/// sorted, duplicates dropped.
fn normalized_rules(list: &str) -> String {
    let mut rows: Vec<String> = list
        .lines()
        .skip(1)
        .map(|line| {
            let (resource, rest) = match line.split_once('[') {
                Some((resource, rest)) => (resource.trim(), format!("[{rest}")),
                None => (line.trim(), String::new()),
            };
            let mut groups: Vec<Vec<&str>> = rest
                .split(']')
                .filter_map(|g| g.trim().strip_prefix('['))
                .map(|g| g.split_whitespace().collect())
                .collect();
            if let Some(verbs) = groups.last_mut() {
                verbs.sort_unstable();
            }
            let groups: Vec<String> = groups
                .iter()
                .map(|g| format!("[{}]", g.join(" ")))
                .collect();
            format!("{resource} | {}", groups.join(" | "))
        })
        .collect();
    rows.sort();
    rows.dedup();
    rows.join("\n") + "\n"
}

fn can(plane: &ControlPlane, user: &str, verb: &str, resource: &str, namespace: &str) -> bool {
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
            user,
        ],
    );
    out.trim() == "yes"
}

fn operator_is_refused_what_it_does_not_need(plane: &ControlPlane, elsewhere: &str) {
    let home = RELEASE_NAMESPACE;
    assert!(can(
        plane,
        OPERATOR,
        "patch",
        "modelgroups.modelgate.io/status",
        home
    ));
    assert!(can(plane, OPERATOR, "create", "secrets", home));
    assert!(can(plane, OPERATOR, "watch", "secrets", home));
    // Only its own webhook registration, by name.
    let (_, own, _) = kubectl(
        plane,
        &[
            "auth",
            "can-i",
            "patch",
            "mutatingwebhookconfigurations/modelgate-injector",
            "--as",
            OPERATOR,
        ],
    );
    assert_eq!(own.trim(), "yes");
    for (verb, resource, namespace) in [
        ("update", "modelgroups.modelgate.io/status", home),
        ("update", "modelgroups.modelgate.io", home),
        ("create", "modelgroups.modelgate.io", home),
        ("delete", "secrets", home),
        ("update", "secrets", home),
        ("delete", "leases.coordination.k8s.io", home),
        ("get", "pods", home),
        ("create", "pods", home),
        (
            "patch",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
            home,
        ),
        ("list", "secrets", elsewhere),
        ("get", "secrets", elsewhere),
    ] {
        assert!(
            !can(plane, OPERATOR, verb, resource, namespace),
            "the operator may {verb} {resource} in {namespace}"
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
            OPERATOR,
        ],
    );
    assert_eq!(everywhere.trim(), "no", "no cluster-wide list of Secrets");
}

/// With the gateway's own token: its config Secret reads, and so does a watch of it by name;
/// a VirtualKey's Secret, the credentials Secret and a list of all Secrets are forbidden.
async fn the_gateway_reads_its_config_and_no_other_secret(plane: &ControlPlane) {
    let kubeconfig = plane.kubeconfig_for_service_account(RELEASE_NAMESPACE, "modelgate-gateway");
    let gateway = testbin::client_from(&kubeconfig).await;
    let secrets: Api<Secret> = Api::namespaced(gateway, RELEASE_NAMESPACE);
    let config = secrets.get("modelgate-config").await.unwrap();
    assert!(config.data.unwrap().contains_key("config.json"));
    let by_name = ListParams::default().fields("metadata.name=modelgate-config");
    assert_eq!(secrets.list(&by_name).await.unwrap().items.len(), 1);
    for name in [
        "search-team-key",
        "modelgate-credentials",
        "openai-credentials",
    ] {
        let error = secrets.get(name).await.unwrap_err();
        assert!(forbidden(&error), "{name}: {error}");
    }
    let error = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(forbidden(&error), "list: {error}");
}

fn forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(response) if response.code == 403)
}

/// A copy of the CRD chart whose ModelGroup CRD has one more printer column, upgraded over the
/// installed one: the API server's CRD gains the column, and the objects stay.
fn an_upgrade_of_the_crd_chart_updates_the_crd(plane: &ControlPlane) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(std::path::Path::new(CRDS_CHART), copy.path());
    let template = copy.path().join("templates/modelgroups.modelgate.io.yaml");
    let mut crd = objects(&std::fs::read_to_string(&template).unwrap()).remove(0);
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array_mut()
        .unwrap()
        .push(
            serde_json::json!({"name": "Upgraded", "type": "string", "jsonPath": ".spec.strategy"}),
        );
    // JSON is YAML: the template stays a valid manifest.
    std::fs::write(&template, crd.to_string()).unwrap();
    let chart = copy.path().join("Chart.yaml");
    let text = std::fs::read_to_string(&chart).unwrap();
    std::fs::write(&chart, text.replace("version: 0.1.0", "version: 0.1.1")).unwrap();

    helm(
        plane,
        &["upgrade", "modelgate-crds", copy.path().to_str().unwrap()],
    );
    let (ok, columns, stderr) = kubectl(
        plane,
        &[
            "get",
            "crd",
            "modelgroups.modelgate.io",
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
        ],
    );
    assert!(ok && columns.contains("Upgraded"), "{columns} {stderr}");
    let (ok, table, stderr) = kubectl(plane, &["get", "mg", "-n", RELEASE_NAMESPACE]);
    assert!(
        ok && table.contains("UPGRADED") && table.contains("chat-backup"),
        "{table} {stderr}"
    );
}

fn an_upgrade_of_the_chart_changes_the_workloads(plane: &ControlPlane) {
    helm(
        plane,
        &[
            "upgrade",
            "modelgate",
            crate::chart::CHART,
            "-n",
            RELEASE_NAMESPACE,
            "--reuse-values",
            "--set",
            "gateway.replicas=3",
        ],
    );
    let (ok, replicas, stderr) = kubectl(
        plane,
        &[
            "get",
            "deployment",
            "modelgate-gateway",
            "-n",
            RELEASE_NAMESPACE,
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert!(ok && replicas == "3", "{replicas} {stderr}");
}

fn uninstalling_the_crd_chart_keeps_the_crds_and_the_objects(plane: &ControlPlane) {
    helm(plane, &["uninstall", "modelgate-crds"]);
    let (ok, table, stderr) = kubectl(plane, &["get", "mg", "-n", RELEASE_NAMESPACE]);
    assert!(ok && table.contains("chat-backup"), "{table} {stderr}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
