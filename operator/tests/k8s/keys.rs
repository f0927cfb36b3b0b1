//! Generated virtual keys: a strong `sk-mg-` key in a Secret owned by the VirtualKey, and the key
//! material nowhere else. A canary check searches status, events, the operator's logs and the
//! published config for it.

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{Api, api::ListParams};
use modelgate_crds::{ModelGroup, RoutingPolicy, VirtualKey, hash_key};

use crate::support::{Operator, OperatorOptions, control_plane, kubectl_apply, wait_condition};

const OBJECTS: &str = r#"
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: chat}
spec:
  models: [chat]
  deployments: [{name: mock, provider: mock, model: mock-1}]
---
apiVersion: modelgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: default}
spec: {strategy: simple-shuffle}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {name: generated}
spec: {team: search}
---
apiVersion: modelgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: search}
spec: {teams: [search]}
---
apiVersion: v1
kind: Secret
metadata: {name: own-key, labels: {modelgate.io/virtual-key: "true"}}
stringData: {key: sk-mg-brought-by-the-user-0001}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {name: brought}
spec:
  keySecretRef: {name: own-key, key: key}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_key_lives_only_in_its_owned_secret() {
    let plane = control_plane();
    let namespace = plane.namespace("keys").await;
    let client = plane.client().await;
    let operator = Operator::start(OperatorOptions::new(plane, &namespace)).await;
    kubectl_apply(plane, &namespace, OBJECTS);
    wait_condition::<VirtualKey>(&client, &namespace, "generated", "Ready", "True", None).await;
    wait_condition::<VirtualKey>(&client, &namespace, "brought", "Ready", "True", None).await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let generated = secrets.get("generated-key").await.unwrap();
    let key = String::from_utf8(generated.data.as_ref().unwrap()["key"].0.clone()).unwrap();
    assert!(
        key.starts_with("sk-mg-") && key.len() >= 40,
        "weak key: {} chars",
        key.len()
    );
    let virtual_keys: Api<VirtualKey> = Api::namespaced(client.clone(), &namespace);
    let owner = &generated.metadata.owner_references.as_ref().unwrap()[0];
    let vk = virtual_keys.get("generated").await.unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("VirtualKey", "generated", Some(true))
    );
    assert_eq!(Some(&owner.uid), vk.metadata.uid.as_ref());
    assert_eq!(
        generated.metadata.labels.as_ref().unwrap()["modelgate.io/virtual-key"],
        "generated"
    );
    // A key the user brings is used as is: nothing is generated for it.
    assert!(secrets.get_opt("brought-key").await.unwrap().is_none());

    // The published config holds the key's hash, never the key.
    let config = secrets.get("modelgate-config").await.unwrap();
    let config_json =
        String::from_utf8(config.data.as_ref().unwrap()["config.json"].0.clone()).unwrap();
    assert!(
        config_json.contains(&hash_key(&key)),
        "the key's hash is not published"
    );

    // The canary: the key appears in no status, event, log line or config.
    let mut haystacks = vec![
        ("config.json", config_json),
        ("config Secret", serde_json::to_string(&config).unwrap()),
        ("operator log", operator.logs()),
    ];
    for vk in virtual_keys.list(&ListParams::default()).await.unwrap() {
        haystacks.push(("VirtualKey", serde_json::to_string(&vk).unwrap()));
    }
    let groups: Api<ModelGroup> = Api::namespaced(client.clone(), &namespace);
    for group in groups.list(&ListParams::default()).await.unwrap() {
        haystacks.push(("ModelGroup", serde_json::to_string(&group).unwrap()));
    }
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &namespace);
    for policy in policies.list(&ListParams::default()).await.unwrap() {
        haystacks.push(("RoutingPolicy", serde_json::to_string(&policy).unwrap()));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let events = events.list(&ListParams::default()).await.unwrap();
    assert!(!events.items.is_empty(), "no events to search");
    haystacks.push(("events", serde_json::to_string(&events).unwrap()));
    for (place, text) in &haystacks {
        assert!(
            !text.contains(&key),
            "the generated key leaked into {place}"
        );
        assert!(
            !text.contains("sk-mg-brought-by-the-user-0001"),
            "a user key leaked into {place}"
        );
    }
}
