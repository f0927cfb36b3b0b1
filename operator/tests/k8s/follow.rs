//! The file fallback (a data plane run with `--config` on the mounted Secret instead of
//! `--config-secret`): the operator publishes `modelgate-config`, the Secret is projected into a
//! directory the way the kubelet does it (files under a timestamped directory, `..data` swapped
//! atomically by rename), and the data plane hot-reloads it. A request for a model that does not
//! exist yet fails; after `kubectl apply` of its ModelGroup, it is routed.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt;
use http::StatusCode;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use modelgate_dataplane::{Gateway, GatewayOptions};
use tokio::time::Instant;

use crate::{
    release::chat,
    support::{Operator, OperatorOptions, SETTLE, control_plane, kubectl_apply},
};
use testbin::wait_until;

const KEY: &str = "sk-mg-follow-the-operator-01";

fn group(name: &str) -> String {
    format!(
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {{name: {name}}}\nspec:\n  models: [{name}]\n  deployments: [{{name: mock, provider: mock, model: mock-{name}}}]\n"
    )
}

/// Writes `config.json` the kubelet's way: a fresh `..<n>` directory, a `..data_tmp` symlink to
/// it renamed over `..data`, and `config.json -> ..data/config.json` created once.
fn project(root: &Path, generation: u32, config: &[u8]) {
    let dir_name = format!("..projection_{generation}");
    let dir = root.join(&dir_name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    let previous = std::fs::read_link(root.join("..data")).ok();
    symlink(&dir_name, root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    if !root.join("config.json").exists() {
        symlink("..data/config.json", root.join("config.json")).unwrap();
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(root.join(previous)).unwrap();
    }
}

/// Projects every version of the namespace's config Secret into `root`, as the kubelet would
/// (minus its sync delay).
fn spawn_projector(client: kube::Client, namespace: &str, root: PathBuf) {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields("metadata.name=modelgate-config");
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(secrets, config).applied_objects());
        let mut generation = 0;
        while let Some(Ok(secret)) = stream.next().await {
            if let Some(json) = secret.data.as_ref().and_then(|d| d.get("config.json")) {
                generation += 1;
                project(&root, generation, &json.0);
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_plane_serves_what_the_operator_publishes() {
    let plane = control_plane();
    let namespace = plane.namespace("follow").await;
    let client = plane.client().await;
    let operator = Operator::start(OperatorOptions::new(plane, &namespace)).await;
    let key = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: team-key, labels: {{modelgate.io/virtual-key: \"true\"}}}}\nstringData: {{key: {KEY}}}\n---\napiVersion: modelgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {{name: team}}\nspec:\n  keySecretRef: {{name: team-key, key: key}}\n"
    );
    kubectl_apply(plane, &namespace, &format!("{key}---\n{}", group("alpha")));

    let mount = tempfile::tempdir().unwrap();
    spawn_projector(client.clone(), &namespace, mount.path().to_owned());
    let config_path = mount.path().join("config.json");
    assert!(
        wait_until(SETTLE, || {
            let exists = config_path.exists();
            async move { exists }
        })
        .await,
        "the config was never published:\n{}",
        operator.logs()
    );
    let gateway = Gateway::start(GatewayOptions {
        max_body_bytes: 1 << 20,
        ..GatewayOptions::local(config_path)
    })
    .await
    .unwrap();

    // kubectl creates the objects one by one, so the first publish may predate `alpha`.
    let serves_alpha = wait_until(SETTLE, || async {
        chat(gateway.api_addr(), KEY, "alpha").await.0 == StatusCode::OK
    })
    .await;
    assert!(serves_alpha, "alpha was never served:\n{}", operator.logs());
    let (status, body) = chat(gateway.api_addr(), KEY, "beta").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("model_not_found"), "{body}");

    let applied = Instant::now();
    kubectl_apply(plane, &namespace, &group("beta"));
    let mut routed = false;
    let deadline = applied + SETTLE;
    while Instant::now() < deadline {
        if chat(gateway.api_addr(), KEY, "beta").await.0 == StatusCode::OK {
            routed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = applied.elapsed();
    assert!(routed, "beta was never routed:\n{}", operator.logs());
    // The figure the README reports (kubelet sync delay excluded).
    eprintln!("apply -> first routed request: {} ms", elapsed.as_millis());
    gateway.shutdown().await;
}
