//! Per-object status: conditions with reasons, observedGeneration and the config checksum;
//! cycles and unknown references reported on the object; Events on transitions; an invalid
//! object never blocks a valid one.

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{Api, api::ListParams};
use modelgate_crds::{ModelGroup, RoutingPolicy, VirtualKey};

use crate::support::{
    Operator, OperatorOptions, SETTLE, control_plane, get_json, kubectl_apply, wait_condition,
};

const OBJECTS: &str = r#"
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: good}
spec:
  models: [good-model]
  deployments:
    - {name: mock, provider: mock, model: mock-1}
    - {name: llama, provider: openai-compatible, model: meta-llama/Llama-3.3-70B-Instruct, baseUrl: "https://api.together.xyz/v1"}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: cycle-a}
spec:
  models: [cycle-a]
  deployments: [{name: mock, provider: mock, model: mock-1}]
  fallbacks: [cycle-b]
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: cycle-b}
spec:
  models: [cycle-b]
  deployments: [{name: mock, provider: mock, model: mock-1}]
  fallbacks: [cycle-a]
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: dangling}
spec:
  models: [dangling]
  deployments: [{name: mock, provider: mock, model: mock-1}]
  fallbacks: [does-not-exist]
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: needs-secret}
spec:
  models: [needs-secret]
  deployments:
    - name: openai
      provider: openai
      model: gpt-4o-mini
      credentials:
        secretKeyRef: {name: provider-credentials, key: apiKey}
---
apiVersion: modelgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: default}
spec:
  strategy: least-busy
---
apiVersion: v1
kind: Secret
metadata: {name: team-key, labels: {modelgate.io/virtual-key: "true"}}
stringData: {key: sk-mg-status-test-key-000001}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {name: team}
spec:
  keySecretRef: {name: team-key, key: key}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn each_object_gets_conditions_reasons_and_the_checksum_of_its_config() {
    let plane = control_plane();
    let namespace = plane.namespace("status").await;
    let client = plane.client().await;
    let operator = Operator::start(OperatorOptions::new(plane, &namespace)).await;
    kubectl_apply(plane, &namespace, OBJECTS);

    let ready = wait_condition::<ModelGroup>(
        &client,
        &namespace,
        "good",
        "Ready",
        "True",
        Some("Published"),
    )
    .await;
    assert_eq!(ready["observedGeneration"], 1);
    wait_condition::<RoutingPolicy>(&client, &namespace, "default", "Ready", "True", None).await;
    wait_condition::<VirtualKey>(&client, &namespace, "team", "Ready", "True", None).await;

    // A fallback cycle: rejected, though every reference exists.
    let accepted = wait_condition::<ModelGroup>(
        &client,
        &namespace,
        "cycle-a",
        "Accepted",
        "False",
        Some("FallbackCycle"),
    )
    .await;
    assert!(
        accepted["message"].as_str().unwrap().contains("cycle-b"),
        "{accepted}"
    );
    wait_condition::<ModelGroup>(&client, &namespace, "cycle-a", "ResolvedRefs", "True", None)
        .await;
    // An unknown fallback and a missing Secret: unresolved references, with what to fix.
    let refs = wait_condition::<ModelGroup>(
        &client,
        &namespace,
        "dangling",
        "ResolvedRefs",
        "False",
        Some("UnknownFallback"),
    )
    .await;
    assert!(
        refs["message"].as_str().unwrap().contains("does-not-exist"),
        "{refs}"
    );
    let refs = wait_condition::<ModelGroup>(
        &client,
        &namespace,
        "needs-secret",
        "ResolvedRefs",
        "False",
        Some("SecretNotFound"),
    )
    .await;
    assert!(
        refs["message"]
            .as_str()
            .unwrap()
            .contains("provider-credentials"),
        "{refs}"
    );
    wait_condition::<ModelGroup>(
        &client,
        &namespace,
        "needs-secret",
        "Ready",
        "False",
        Some("SecretNotFound"),
    )
    .await;

    // The valid objects are published; the rejected ones are left out.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let published = secrets.get("modelgate-config").await.unwrap();
    let checksum =
        published.metadata.annotations.as_ref().unwrap()["modelgate.io/config-checksum"].clone();
    let config: serde_json::Value =
        serde_json::from_slice(&published.data.as_ref().unwrap()["config.json"].0).unwrap();
    assert_eq!(config["checksum"], checksum.as_str());
    let groups: Vec<&String> = config["modelGroups"].as_object().unwrap().keys().collect();
    assert_eq!(groups, [&format!("{namespace}/good")]);
    let good = get_json::<ModelGroup>(&client, &namespace, "good")
        .await
        .unwrap();
    assert_eq!(good["status"]["configChecksum"], checksum.as_str());
    assert_eq!(good["status"]["deployments"], 2);
    // The untagged deployment of a known family takes the catalog's capabilities; the mock has
    // none. `kubectl get mg` shows them in its Tags column.
    assert_eq!(good["status"]["tags"], "function-calling");
    let llama = &good["status"]["deploymentDetails"][1];
    assert_eq!(llama["name"], "llama");
    assert_eq!(llama["tags"], serde_json::json!(["function-calling"]));
    assert_eq!(llama["tagsFrom"], "catalog");
    assert_eq!(llama["contextWindow"], 128000);
    assert_eq!(
        good["status"]["deploymentDetails"][0]["tagsFrom"],
        "declared"
    );
    assert_eq!(good["status"]["observedGeneration"], 1);
    let cycle = get_json::<ModelGroup>(&client, &namespace, "cycle-a")
        .await
        .unwrap();
    assert!(cycle["status"].get("configChecksum").is_none(), "{cycle}");

    // Events record the transitions: a warning naming the reason, and Ready for the good one.
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let found = testbin::wait_until(SETTLE, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.unwrap();
            let has = |name: &str, type_: &str, reason: &str| {
                list.items.iter().any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                        && e.type_.as_deref() == Some(type_)
                        && e.reason.as_deref() == Some(reason)
                })
            };
            has("dangling", "Warning", "UnknownFallback") && has("good", "Normal", "Published")
        }
    })
    .await;
    assert!(found, "expected events not recorded:\n{}", operator.logs());

    // Fixing the reference makes the object Ready without touching it.
    kubectl_apply(
        plane,
        &namespace,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: provider-credentials, labels: {modelgate.io/credential: \"true\"}}\nstringData: {apiKey: sk-provider-0000}\n",
    );
    wait_condition::<ModelGroup>(&client, &namespace, "needs-secret", "Ready", "True", None).await;

    // A spec change is observed under its new generation.
    kubectl_apply(
        plane,
        &namespace,
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {name: good}\nspec:\n  models: [good-model, good-alias]\n  deployments:\n    - {name: mock, provider: mock, model: mock-1}\n",
    );
    let settled = testbin::wait_until(SETTLE, || {
        let client = client.clone();
        let namespace = namespace.clone();
        async move {
            let good = get_json::<ModelGroup>(&client, &namespace, "good")
                .await
                .unwrap();
            good["metadata"]["generation"] == 2 && good["status"]["observedGeneration"] == 2
        }
    })
    .await;
    assert!(
        settled,
        "observedGeneration never followed the spec:\n{}",
        operator.logs()
    );
}
