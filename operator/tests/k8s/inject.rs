//! Sidecar injection with the real API server calling the operator's webhook (registered by URL,
//! TLS with the CA the operator issued and keeps in the `caBundle`): pods that ask are mutated,
//! the others are not, every decision is an Event, a second pass changes nothing, certificates
//! rotate without a failed admission, pods created while the operator is down are reported when it
//! returns, and an injected pod's sidecar and an unmodified OpenAI SDK app, started exactly as the
//! pod spec says, serve a call under the pod's VirtualKey.

use std::{net::SocketAddr, time::Duration};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::ReplicaSet,
    core::v1::{Container, Pod, Secret},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use modelgate_crds::VirtualKey;
use serde_json::{Value, json};
use testbin::{ControlPlane, wait_until};

use crate::support::{
    Operator, OperatorOptions, SETTLE, control_plane, kubectl, kubectl_apply, sum_samples,
    wait_condition,
};

const OBJECTS: &str = r#"
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: chat}
spec:
  models: [chat]
  deployments: [{name: mock, provider: mock, model: mock-1, pricing: {input: 0.15, output: 0.60}}]
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {name: search-team}
spec: {}
"#;

/// An operator serving the webhook for `namespaces` (the first holds its Lease and certificate),
/// and the MutatingWebhookConfiguration that points the API server at it.
pub struct Injector {
    pub operator: Operator,
    pub configuration: String,
}

async fn webhook_addr(operator: &Operator) -> SocketAddr {
    let mut addr = None;
    let found = wait_until(SETTLE, || {
        addr = operator
            .log_lines()
            .iter()
            .find_map(|line| line["fields"]["webhook_addr"].as_str()?.parse().ok());
        let found = addr.is_some();
        async move { found }
    })
    .await;
    assert!(found, "no webhook listening:\n{}", operator.logs());
    addr.unwrap()
}

impl Injector {
    pub async fn start(
        plane: &ControlPlane,
        namespaces: &[&str],
        failure_policy: &str,
        extra: &[&str],
    ) -> Self {
        let configuration = format!("injector-{}", namespaces[0]);
        let others: Vec<String> = namespaces[1..]
            .iter()
            .map(|ns| format!("--namespace={ns}"))
            .collect();
        let mut flags: Vec<&str> = others.iter().map(String::as_str).collect();
        flags.extend([
            "--webhook-listen=127.0.0.1:0",
            "--webhook-dns-names=127.0.0.1",
            "--webhook-cert-check-interval=500ms",
            "--injection-report-interval=500ms",
            "--sidecar-image=registry.example.com/modelgate:test",
        ]);
        let configuration_flag = format!("--webhook-configuration={configuration}");
        flags.push(&configuration_flag);
        flags.extend(extra);
        let operator = Operator::start(OperatorOptions {
            extra: &flags,
            ..OperatorOptions::new(plane, namespaces[0])
        })
        .await;
        let addr = webhook_addr(&operator).await;
        register(plane, &configuration, addr, failure_policy).await;
        for namespace in namespaces {
            let (ok, _, stderr) = kubectl(
                plane,
                &[
                    "label",
                    "namespace",
                    namespace,
                    &format!("modelgate.io/test-injector={configuration}"),
                    "--overwrite",
                ],
            );
            assert!(ok, "{stderr}");
        }
        let injector = Self {
            operator,
            configuration,
        };
        injector.wait_trusted(plane).await;
        injector
    }

    /// Waits until the configuration carries a CA bundle (the operator patches it).
    async fn wait_trusted(&self, plane: &ControlPlane) {
        let client = plane.client().await;
        let trusted = wait_until(SETTLE, || async {
            bundle(&client, &self.configuration)
                .await
                .is_some_and(|b| !b.is_empty())
        })
        .await;
        assert!(trusted, "caBundle never set:\n{}", self.operator.logs());
    }
}

/// Registers the webhook by URL (no Service networking without a kubelet), selecting only the
/// namespaces labelled for this test.
async fn register(plane: &ControlPlane, name: &str, addr: SocketAddr, failure_policy: &str) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(plane.client().await);
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "inject.modelgate.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://{addr}/mutate-pods")},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {
                "matchLabels": {"modelgate.io/test-injector": name},
                "matchExpressions": [{"key": "modelgate.io/inject", "operator": "NotIn", "values": ["disabled"]}],
            },
            "objectSelector": {"matchExpressions": [{"key": "app.kubernetes.io/part-of", "operator": "NotIn", "values": ["modelgate"]}]},
            "failurePolicy": failure_policy,
            "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "sideEffects": "NoneOnDryRun",
        }],
    }))
    .unwrap();
    match api.get_opt(name).await.unwrap() {
        Some(existing) => {
            let mut webhooks = existing.webhooks.clone().unwrap();
            webhooks[0].client_config.url = Some(format!("https://{addr}/mutate-pods"));
            let replaced = MutatingWebhookConfiguration {
                webhooks: Some(webhooks),
                ..existing
            };
            api.replace(name, &PostParams::default(), &replaced)
                .await
                .unwrap();
        }
        None => {
            api.create(&PostParams::default(), &configuration)
                .await
                .unwrap();
        }
    }
}

async fn bundle(client: &Client, name: &str) -> Option<Vec<u8>> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let configuration = api.get_opt(name).await.ok()??;
    Some(
        configuration.webhooks?[0]
            .client_config
            .ca_bundle
            .clone()?
            .0,
    )
}

fn pod(name: &str, annotations: Value, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }))
    .unwrap()
}

fn app_spec() -> Value {
    json!({"containers": [{"name": "app", "image": "python:3.12", "env": [{"name": "LOG_LEVEL", "value": "info"}]}]})
}

async fn create(client: &Client, namespace: &str, pod: &Pod) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {}: {e}", pod.name_any()))
}

fn sidecar(pod: &Pod) -> Option<&Container> {
    pod.spec
        .as_ref()?
        .init_containers
        .iter()
        .flatten()
        .chain(&pod.spec.as_ref()?.containers)
        .find(|c| c.name == "modelgate-proxy")
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    container.env.iter().flatten().find(|e| e.name == name)
}

fn app(pod: &Pod) -> &Container {
    pod.spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .find(|c| c.name == "app")
        .unwrap()
}

/// Waits for an Event with `reason` about the object named `regarding`; returns its note.
async fn event(client: &Client, namespace: &str, regarding: &str, reason: &str) -> String {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let note = std::cell::RefCell::new(None);
    let found = wait_until(SETTLE, || async {
        let events = api.list(&ListParams::default()).await.unwrap();
        let found = events
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
            })
            .map(|e| e.note.unwrap_or_default());
        let done = found.is_some();
        *note.borrow_mut() = found;
        done
    })
    .await;
    assert!(found, "no {reason} Event about {regarding} in {namespace}");
    note.into_inner().unwrap()
}

/// A new namespace labelled to ask for injection.
async fn asking_namespace(plane: &ControlPlane, prefix: &str) -> String {
    let namespace = plane.namespace(prefix).await;
    let (ok, _, stderr) = kubectl(
        plane,
        &[
            "label",
            "namespace",
            &namespace,
            "modelgate.io/inject=enabled",
        ],
    );
    assert!(ok, "{stderr}");
    namespace
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_that_ask_get_the_sidecar_and_every_decision_says_why() {
    let plane = control_plane();
    let asking = asking_namespace(plane, "inject-on").await;
    let quiet = plane.namespace("inject-off").await;
    let client = plane.client().await;
    kubectl_apply(plane, &asking, OBJECTS);
    let injector = Injector::start(plane, &[&asking, &quiet], "Fail", &[]).await;
    wait_condition::<VirtualKey>(&client, &asking, "search-team", "Ready", "True", None).await;

    // A bare pod in a namespace that asks, naming its VirtualKey.
    let keyed = create(
        &client,
        &asking,
        &pod(
            "keyed",
            json!({"modelgate.io/virtual-key": "search-team"}),
            app_spec(),
        ),
    )
    .await;
    let proxy = sidecar(&keyed).expect("a sidecar");
    let spec = keyed.spec.as_ref().unwrap();
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[0].name,
        "modelgate-proxy",
        "first, native"
    );
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        proxy.image.as_deref(),
        Some("registry.example.com/modelgate:test")
    );
    assert!(proxy.startup_probe.is_some() && proxy.readiness_probe.is_some());
    let security = proxy.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    let app_container = app(&keyed);
    assert_eq!(
        env(app_container, "OPENAI_BASE_URL")
            .unwrap()
            .value
            .as_deref(),
        Some("http://127.0.0.1:4000/v1")
    );
    assert_eq!(
        env(app_container, "ANTHROPIC_BASE_URL")
            .unwrap()
            .value
            .as_deref(),
        Some("http://127.0.0.1:4000")
    );
    for name in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
        let var = env(app_container, name).unwrap();
        assert!(
            var.value.is_none(),
            "{name} is a reference, never the value"
        );
        let selector = var
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            ("search-team-key", "key")
        );
    }
    assert!(
        app_container.volume_mounts.is_none(),
        "the app mounts nothing of the sidecar's"
    );
    assert!(keyed.annotations().contains_key("modelgate.io/injected"));
    assert!(
        event(&client, &asking, "keyed", "Injected")
            .await
            .contains("injected")
    );

    // A pod of a Deployment's ReplicaSet: its Event is on the ReplicaSet (the pod has no name yet).
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &asking);
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": app_spec()});
    let replica_set: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-5d9f8"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    }))
    .unwrap();
    let replica_set = replica_sets
        .create(&PostParams::default(), &replica_set)
        .await
        .unwrap();
    let mut owned: Pod = serde_json::from_value(json!({
        "metadata": {
            "generateName": "web-5d9f8-",
            "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f8", "uid": replica_set.uid().unwrap(), "controller": true}],
        },
        "spec": app_spec(),
    }))
    .unwrap();
    owned = create(&client, &asking, &owned).await;
    assert!(sidecar(&owned).is_some());
    assert!(
        env(app(&owned), "OPENAI_API_KEY").is_none(),
        "no VirtualKey named, no key"
    );
    event(&client, &asking, "web-5d9f8", "Injected").await;

    // Opted out, and not asked for.
    let declined = create(
        &client,
        &asking,
        &pod(
            "declined",
            json!({"modelgate.io/inject": "disabled"}),
            app_spec(),
        ),
    )
    .await;
    assert!(sidecar(&declined).is_none());
    let plain = create(&client, &quiet, &pod("plain", json!({}), app_spec())).await;
    assert!(sidecar(&plain).is_none() && env(app(&plain), "OPENAI_BASE_URL").is_none());
    let asked = create(
        &client,
        &quiet,
        &pod(
            "asked",
            json!({"modelgate.io/inject": "enabled"}),
            app_spec(),
        ),
    )
    .await;
    assert!(sidecar(&asked).is_some());

    // Skips, each with its reason on the pod and in an Event.
    let host =
        json!({"hostNetwork": true, "containers": [{"name": "app", "image": "python:3.12"}]});
    for (name, annotations, spec, reason) in [
        ("host", json!({}), host, "HostNetwork"),
        (
            "nokey",
            json!({"modelgate.io/virtual-key": "nobody"}),
            app_spec(),
            "UnknownVirtualKey",
        ),
        (
            "badport",
            json!({"modelgate.io/proxy-port": "many"}),
            app_spec(),
            "InvalidAnnotation",
        ),
        (
            "badvalue",
            json!({"modelgate.io/inject": "yes"}),
            app_spec(),
            "InvalidAnnotation",
        ),
    ] {
        let skipped = create(&client, &asking, &pod(name, annotations, spec)).await;
        assert!(sidecar(&skipped).is_none(), "{name}");
        assert_eq!(
            skipped
                .annotations()
                .get("modelgate.io/injection-skipped")
                .map(String::as_str),
            Some(reason),
            "{name}"
        );
        let note = event(&client, &asking, name, "InjectionSkipped").await;
        assert!(note.starts_with(reason), "{name}: {note}");
    }

    // Idempotent: the injected pod sent through the webhook again comes back unchanged.
    let mut again = keyed.clone();
    again.metadata = kube::api::ObjectMeta {
        name: Some("keyed-again".to_owned()),
        annotations: keyed.metadata.annotations.clone(),
        ..Default::default()
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &asking);
    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &again,
        )
        .await
        .unwrap();
    assert_eq!(dry.spec, keyed.spec, "a second pass changed the pod");
    assert_eq!(dry.annotations(), keyed.annotations());

    let logs = injector.operator.logs();
    assert!(
        injector
            .operator
            .metric("modelgate_operator_injections_total")
            .await
            >= 7.0,
        "{logs}"
    );
    // Reconcile, publish and webhook series together, as Prometheus' own checker reads them.
    let exposition = injector.operator.exposition().await;
    for series in [
        "modelgate_operator_reconciles_total",
        "modelgate_operator_reconcile_duration_seconds_count",
        "modelgate_operator_publishes_total",
        "modelgate_operator_webhook_cert_renewals_total",
    ] {
        assert!(
            sum_samples(&exposition, series) >= 1.0,
            "{series}: {exposition}"
        );
    }
    if let Err(problems) = testbin::promtool::check_metrics(&exposition) {
        panic!("promtool check metrics:\n{problems}\n\nexposition:\n{exposition}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_without_a_failed_admission() {
    let plane = control_plane();
    let namespace = asking_namespace(plane, "inject-rotate").await;
    let client = plane.client().await;
    // Serving certificates renew every 4 s or so; the CA is succeeded at 10 s and retired at 16 s.
    let injector = Injector::start(
        plane,
        &[&namespace],
        "Fail",
        &["--webhook-cert-validity=6s", "--webhook-ca-validity=15s"],
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let ca_name = |secret: Secret| -> String {
        let state: Value = serde_json::from_slice(&secret.data.unwrap()["state.json"].0).unwrap();
        state["ca"]["name"].as_str().unwrap().to_owned()
    };
    let first_ca = ca_name(secrets.get("modelgate-webhook-tls").await.unwrap());
    let first_bundle = bundle(&client, &injector.configuration).await.unwrap();

    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut created = 0;
    let mut bundles = vec![first_bundle];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut rotated = false;
    // A steady stream of pod creations, five a second, through the rotation.
    let mut pace = tokio::time::interval(Duration::from_millis(200));
    while tokio::time::Instant::now() < deadline {
        pace.tick().await;
        let result = api
            .create(
                &PostParams::default(),
                &pod(&format!("p-{created}"), json!({}), app_spec()),
            )
            .await;
        let pod = result.unwrap_or_else(|e| {
            panic!(
                "admission failed during rotation (pod {created}): {e}\n{}",
                injector.operator.logs()
            )
        });
        assert!(sidecar(&pod).is_some(), "pod {created} not injected");
        created += 1;
        if let Some(current) = bundle(&client, &injector.configuration).await
            && bundles.last() != Some(&current)
        {
            bundles.push(current);
        }
        let ca = ca_name(secrets.get("modelgate-webhook-tls").await.unwrap());
        // Done once a second CA signs and a bundle without the first one has been served.
        if ca != first_ca && bundles.len() >= 3 {
            rotated = true;
            break;
        }
    }
    assert!(
        rotated,
        "no full CA rotation in 60 s ({} bundles)",
        bundles.len()
    );
    assert!(created > 20, "{created}");
    eprintln!(
        "{created} pods admitted across {} caBundles, none refused",
        bundles.len()
    );
    assert!(
        injector
            .operator
            .metric("modelgate_operator_webhook_cert_renewals_total")
            .await
            >= 4.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_created_while_the_operator_is_down_are_reported_when_it_returns() {
    let plane = control_plane();
    let namespace = asking_namespace(plane, "inject-down").await;
    let client = plane.client().await;
    let injector = Injector::start(plane, &[&namespace], "Ignore", &[]).await;
    assert_eq!(injector.operator.terminate().code(), Some(0));

    // failurePolicy Ignore: the pod is created, without its sidecar.
    let uninjected = create(
        &client,
        &namespace,
        &pod("while-down", json!({}), app_spec()),
    )
    .await;
    assert!(sidecar(&uninjected).is_none());

    let back = Injector::start(plane, &[&namespace], "Ignore", &[]).await;
    let note = event(&client, &namespace, "while-down", "NotInjected").await;
    assert!(note.contains("rollout restart"), "{note}");
    let reported = wait_until(SETTLE, || async {
        back.operator
            .metric("modelgate_operator_pods_not_injected")
            .await
            == 1.0
    })
    .await;
    assert!(reported, "{}", back.operator.logs());
    // And pods created now are injected again.
    let injected = create(&client, &namespace, &pod("after", json!({}), app_spec())).await;
    assert!(sidecar(&injected).is_some());
}
