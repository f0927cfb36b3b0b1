//! What a user sees: `kubectl apply -f examples/k8s/` yields Ready CRs, a published config Secret
//! and a generated key Secret; `kubectl get mg,rp,vk` shows useful columns; `kubectl explain`
//! documents the fields.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use modelgate_crds::{ModelGroup, RoutingPolicy, VirtualKey};

use crate::support::{Operator, OperatorOptions, control_plane, kubectl, wait_condition};

#[tokio::test(flavor = "multi_thread")]
async fn applying_the_examples_yields_ready_objects_a_config_and_a_key() {
    let plane = control_plane();
    let namespace = plane.namespace("examples").await;
    let client = plane.client().await;
    let _operator = Operator::start(OperatorOptions::new(plane, &namespace)).await;
    // Whoever administers namespaces names their org; a key cannot choose its own.
    let (ok, _, stderr) = kubectl(
        plane,
        &["label", "namespace", &namespace, "modelgate.io/org=acme"],
    );
    assert!(ok, "{stderr}");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/k8s/");
    let (ok, _, stderr) = kubectl(plane, &["apply", "-n", &namespace, "-f", examples]);
    assert!(ok, "kubectl apply failed: {stderr}");

    for name in ["chat", "chat-backup"] {
        wait_condition::<ModelGroup>(&client, &namespace, name, "Ready", "True", None).await;
    }
    wait_condition::<RoutingPolicy>(&client, &namespace, "default", "Ready", "True", None).await;
    wait_condition::<VirtualKey>(&client, &namespace, "search-team", "Ready", "True", None).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    assert!(secrets.get_opt("modelgate-config").await.unwrap().is_some());
    let key = secrets.get("search-team-key").await.unwrap();
    assert!(key.data.unwrap()["key"].0.starts_with(b"sk-mg-"));

    let (ok, table, stderr) = kubectl(plane, &["get", "mg,rp,vk", "-n", &namespace]);
    assert!(ok, "{stderr}");
    eprintln!("{table}");
    for column in [
        "MODELS",
        "STRATEGY",
        "DEPLOYMENTS",
        "READY",
        "ORGS",
        "ORG",
        "TEAM",
        "BUDGET",
        "PERIOD",
    ] {
        assert!(table.contains(column), "no {column} column in:\n{table}");
    }
    let chat_row = table
        .lines()
        .find(|l| l.contains("modelgroup.modelgate.io/chat "))
        .unwrap();
    assert!(
        chat_row.contains("latency-based") && chat_row.contains("True"),
        "{chat_row}"
    );
    let key_row = table.lines().find(|l| l.contains("search-team")).unwrap();
    for cell in ["acme", "search", "100", "monthly", "True"] {
        assert!(key_row.contains(cell), "no {cell} in: {key_row}");
    }

    let (ok, explain, stderr) = kubectl(plane, &["explain", "modelgroup.spec.deployments"]);
    assert!(ok, "{stderr}");
    for field in [
        "provider",
        "baseUrl",
        "credentials",
        "pricing",
        "timeouts",
        "weight",
    ] {
        assert!(explain.contains(field), "explain lacks {field}:\n{explain}");
    }
    assert!(explain.contains("DESCRIPTION"), "{explain}");
}
