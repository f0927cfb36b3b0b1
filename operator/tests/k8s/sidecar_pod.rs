//! An injected pod, simulated: the webhook mutates a pod; its sidecar runs as the mutated spec
//! says (args, env, a token of the pod's ServiceAccount); its app is the official OpenAI Python
//! SDK with nothing in its code but a model name, given exactly the env the mutated spec gives it
//! (the key resolved from its `secretKeyRef`, as the kubelet would). Both share the host's
//! loopback, standing for the pod's network namespace (the pod's annotations pick free ports).
//! The call is served by the sidecar and logged under the pod's VirtualKey; the app's identity is
//! refused the provider credentials and the key Secrets; the sidecar counts in `Served`.

use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, api::PostParams};
use modelgate_crds::VirtualKey;
use serde_json::{Value, json};
use testbin::{free_port, wait_until};

use crate::{
    chart::CHART,
    inject::Injector,
    release::{ContainerRun, DataPlane},
    support::{SETTLE, control_plane, get_json, helm, kubectl, kubectl_apply, wait_condition},
};

const PROVIDER_KEY: &str = "sk-provider-canary-7f3a";

fn objects() -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: provider, labels: {{modelgate.io/credential: "true"}}}}
stringData: {{apiKey: {PROVIDER_KEY}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: chat}}
spec:
  models: [chat]
  deployments:
    - {{name: mock, provider: mock, model: mock-1, pricing: {{input: 0.15, output: 0.60}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: openai}}
spec:
  models: [gpt-4o-mini]
  deployments:
    - {{name: openai, provider: openai, model: gpt-4o-mini, credentials: {{secretKeyRef: {{name: provider, key: apiKey}}}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: search-team}}
spec: {{}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app}}
"#
    )
}

/// The app: no base URL, no key, only a model name.
const APP: &str = r#"
from openai import OpenAI
reply = OpenAI().chat.completions.create(
    model="chat", messages=[{"role": "user", "content": "Hello from an unmodified app"}]
)
print(reply.choices[0].message.content)
"#;

fn sdk_python() -> String {
    std::env::var("MODELGATE_SDK_PYTHON").unwrap_or_else(|_| {
        let venv = std::env::var("MODELGATE_VENV").unwrap_or_else(|_| {
            format!(
                "{}/.cache/modelgate/sdk-venv",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let python = format!("{venv}/bin/python");
        assert!(
            std::path::Path::new(&python).exists(),
            "no SDK venv at {venv}: run tests/sdk/venv.sh (make test does)"
        );
        python
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmodified_openai_sdk_app_routes_through_its_injected_sidecar() {
    let plane = control_plane();
    let namespace = plane.namespace("sidecar-pod").await;
    let client = plane.client().await;
    kubectl_apply(plane, &namespace, &objects());
    // The chart's sidecar RBAC for this tenant namespace.
    let tenants = format!("tenants={{{namespace}}}");
    let rendered = helm(
        plane,
        &[
            "template",
            "modelgate",
            CHART,
            "--namespace",
            "modelgate",
            "--show-only",
            "templates/sidecar-rbac.yaml",
            "--set",
            &tenants,
        ],
    );
    kubectl_apply(plane, &namespace, &rendered);

    let _injector = Injector::start(
        plane,
        &[&namespace],
        "Fail",
        &["--sidecar-extra-args=--decision-log=-"],
    )
    .await;
    wait_condition::<VirtualKey>(&client, &namespace, "search-team", "Ready", "True", None).await;

    let (proxy_port, admin_port) = (free_port(), free_port());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "assistant", "annotations": {
            "modelgate.io/inject": "enabled",
            "modelgate.io/virtual-key": "search-team",
            "modelgate.io/proxy-port": proxy_port.to_string(),
            "modelgate.io/admin-port": admin_port.to_string(),
        }},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "python:3.12"}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    let sidecar = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "modelgate-proxy")
        .expect("the sidecar")
        .clone();
    let app = spec["containers"][0].clone();

    // The sidecar, as the kubelet would start it (the credentials mount projected from its Secret).
    let proxy = DataPlane::start_container(plane, "assistant", &namespace, &[], |credentials| {
        ContainerRun::of(&sidecar, &namespace, "assistant", "app", |arg| {
            match arg.strip_prefix("--credentials-dir=") {
                Some(_) => format!("--credentials-dir={}", credentials.display()),
                None => arg.to_owned(),
            }
        })
    })
    .await;
    assert_eq!(proxy.api.port(), proxy_port);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let bundle = secrets.get("modelgate-credentials").await.unwrap();
    proxy.project_credentials(&bundle.data.unwrap()["credentials.json"].0);
    let ready = wait_until(SETTLE, || async { proxy.serves().await.is_some() }).await;
    assert!(
        ready,
        "the sidecar never served a config:\n{}",
        proxy.logs()
    );

    // The app, with exactly the env of its container; secretKeyRef resolved like the kubelet.
    let mut python = Command::new(sdk_python());
    python
        .args(["-c", APP])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    for var in app["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        let value = match &var["valueFrom"]["secretKeyRef"] {
            Value::Null => var["value"].as_str().unwrap().to_owned(),
            reference => {
                let secret = secrets
                    .get(reference["name"].as_str().unwrap())
                    .await
                    .unwrap();
                let key = reference["key"].as_str().unwrap();
                String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
            }
        };
        python.env(name, value);
    }
    let output = python.stdin(Stdio::null()).output().unwrap();
    assert!(
        output.status.success(),
        "the app failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.logs()
    );
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(!answer.trim().is_empty(), "no answer");
    let logged = wait_until(SETTLE, || async {
        proxy
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|record| record["key_id"] == format!("{namespace}/search-team"))
    })
    .await;
    assert!(
        logged,
        "no decision under the pod's key:\n{}",
        proxy.stdout()
    );

    // The trust boundary: the app's identity (the pod's ServiceAccount, which the app shares)
    // reads the config, which holds no provider key, and nothing else.
    let app_identity =
        testbin::client_from(&plane.kubeconfig_for_service_account(&namespace, "app")).await;
    let as_app: Api<Secret> = Api::namespaced(app_identity, &namespace);
    let config = as_app.get("modelgate-config").await.unwrap();
    let config_text = String::from_utf8(config.data.unwrap()["config.json"].0.clone()).unwrap();
    assert!(
        !config_text.contains(PROVIDER_KEY),
        "the config carries a provider key"
    );
    for name in ["modelgate-credentials", "provider", "search-team-key"] {
        match as_app.get(name).await {
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            other => panic!("the app's identity read {name}: {other:?}"),
        }
    }
    // Only the sidecar mounts the credentials volume.
    assert!(app["volumeMounts"].is_null(), "{app}");

    // The sidecar's heartbeat counts in the objects' status, like a gateway pod's.
    let served = wait_until(SETTLE, || async {
        get_json::<VirtualKey>(&client, &namespace, "search-team")
            .await
            .is_some_and(|vk| vk["status"]["served"] == "1/1")
    })
    .await;
    assert!(served, "the sidecar is not counted in Served");
    let (_, table, _) = kubectl(plane, &["get", "vk", "-n", &namespace]);
    assert!(table.contains("1/1"), "{table}");
}
