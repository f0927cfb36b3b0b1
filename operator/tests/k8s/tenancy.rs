//! The tenant boundary on a real API server: a credential is read only from a Secret labelled
//! for it and sent only where that Secret allows; a key's org is its namespace's; no URL's
//! userinfo or query reaches a status, an Event or the operator's log. Each refusal names its
//! reason on the object and in an Event, and the refused credential never enters the config.

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{Api, api::ListParams};
use modelgate_crds::{ModelGroup, VirtualKey};

use crate::support::{
    Operator, OperatorOptions, SETTLE, control_plane, get_json, kubectl, kubectl_apply,
    wait_condition,
};

const BORROWED: &str = "borrowed-canary-credential-7f3a";
const PINNED: &str = "pinned-canary-credential-91c2";
const URL_SECRET: &str = "userinfo-canary-password-5d1e";

fn objects(namespace: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: someone-elses}}
stringData: {{token: {BORROWED}}}
---
apiVersion: v1
kind: Secret
metadata:
  name: pinned
  labels: {{modelgate.io/credential: "true"}}
stringData: {{apiKey: {PINNED}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: borrower}}
spec:
  models: [borrower]
  deployments:
    - {{name: d, provider: openai, model: gpt-4o-mini, credentials: {{secretKeyRef: {{name: someone-elses, key: token}}}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: exfiltrator}}
spec:
  models: [exfiltrator]
  deployments:
    - name: d
      provider: openai
      model: gpt-4o-mini
      baseUrl: https://collector.attacker.example/v1
      credentials: {{secretKeyRef: {{name: pinned, key: apiKey}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: userinfo}}
spec:
  models: [userinfo]
  deployments:
    - {{name: d, provider: openai-compatible, model: m, baseUrl: "http://admin:{URL_SECRET}@vllm.{namespace}.svc:8000/v1"}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: metadata}}
spec:
  models: [metadata]
  deployments:
    - {{name: d, provider: openai-compatible, model: m, baseUrl: "http://169.254.169.254/latest/{URL_SECRET}"}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: fine}}
spec:
  models: [fine]
  deployments: [{{name: mock, provider: mock, model: mock-1}}]
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: impostor}}
spec: {{org: globex}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: member}}
spec: {{org: acme}}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_go_only_where_their_secret_allows_and_orgs_come_from_the_namespace() {
    let plane = control_plane();
    let namespace = plane.namespace("tenancy").await;
    let (ok, _, stderr) = kubectl(
        plane,
        &["label", "namespace", &namespace, "modelgate.io/org=acme"],
    );
    assert!(ok, "{stderr}");
    let client = plane.client().await;
    let operator = Operator::start(OperatorOptions::new(plane, &namespace)).await;
    kubectl_apply(plane, &namespace, &objects(&namespace));

    wait_condition::<ModelGroup>(&client, &namespace, "fine", "Ready", "True", None).await;
    wait_condition::<VirtualKey>(&client, &namespace, "member", "Ready", "True", None).await;
    for (name, reason) in [
        ("borrower", "SecretNotLabelled"),
        ("exfiltrator", "CredentialHostNotAllowed"),
        ("userinfo", "InvalidURL"),
        ("metadata", "InvalidURL"),
    ] {
        wait_condition::<ModelGroup>(&client, &namespace, name, "Accepted", "False", Some(reason))
            .await;
    }
    let borrower =
        wait_condition::<ModelGroup>(&client, &namespace, "borrower", "Accepted", "False", None)
            .await;
    assert!(
        borrower["message"]
            .as_str()
            .unwrap()
            .contains("kubectl label secret someone-elses modelgate.io/credential=true"),
        "{borrower}"
    );
    let impostor = wait_condition::<VirtualKey>(
        &client,
        &namespace,
        "impostor",
        "Accepted",
        "False",
        Some("OrgMismatch"),
    )
    .await;
    assert!(
        impostor["message"].as_str().unwrap().contains("\"acme\""),
        "{impostor}"
    );
    let member = get_json::<VirtualKey>(&client, &namespace, "member")
        .await
        .unwrap();
    assert_eq!(member["status"]["org"], "acme");

    // Each refusal is also an Event saying why.
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let reasons_seen = testbin::wait_until(SETTLE, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.unwrap();
            [
                "SecretNotLabelled",
                "CredentialHostNotAllowed",
                "OrgMismatch",
            ]
            .iter()
            .all(|reason| {
                list.items.iter().any(|e| {
                    e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning")
                })
            })
        }
    })
    .await;
    assert!(reasons_seen, "missing Events:\n{}", operator.logs());

    // The refused credentials never entered the published config, and no secret of a URL is
    // quoted anywhere: statuses, Events, the operator's log.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let config = secrets.get("modelgate-config").await.unwrap();
    let config = String::from_utf8(config.data.unwrap()["config.json"].0.clone()).unwrap();
    // The specs hold what their authors wrote; what the operator writes is the status.
    let (_, statuses, _) = kubectl(
        plane,
        &[
            "get",
            "modelgate",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.items[*].status}",
        ],
    );
    assert!(statuses.contains("CredentialHostNotAllowed"), "{statuses}");
    let (_, events, _) = kubectl(
        plane,
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            &namespace,
            "-o",
            "json",
        ],
    );
    for (sink, text) in [
        ("the config", &config),
        ("the statuses", &statuses),
        ("the Events", &events),
        ("the operator's log", &operator.logs()),
    ] {
        for canary in [BORROWED, PINNED, URL_SECRET] {
            assert!(!text.contains(canary), "{canary} in {sink}");
        }
    }
}
