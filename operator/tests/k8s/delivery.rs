//! Config in seconds, as installed: the README's install, the operator and three gateway data
//! planes run as the chart's pods (their args and env, their ServiceAccounts' tokens), then
//! `kubectl apply` of a changed ModelGroup until all three serve the new checksum (the printed
//! p50/p99 is the README's figure). The objects' status counts the data planes serving it
//! (`3/3`); a stopped one goes stale and drops out of the count once its heartbeat lapses; with
//! the API server stopped the data planes keep serving, and after it returns they pick up a change.

use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use modelgate_crds::ModelGroup;
use testbin::{ControlPlane, wait_until};
use tokio::time::Instant;

use crate::{
    release::{
        DataPlane, RELEASE_NAMESPACE, chat, install_from_readme, installed_objects, readme_block,
        run_script, start_operator_pod,
    },
    support::{SETTLE, get_json, kubectl_apply, wait_condition},
};

/// Changes measured for the propagation figure.
const CHANGES: usize = 20;

/// The ModelGroup the changes edit: the mock fallback of `examples/k8s/`, with one more alias.
fn chat_backup(alias: &str) -> String {
    format!(
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {{name: chat-backup}}\nspec:\n  models: [chat-backup, {alias}]\n  deployments:\n    - {{name: mock, provider: mock, model: mock-chat-1, pricing: {{input: 0.15, output: 0.60}}}}\n"
    )
}

async fn published(client: &Client) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let secret = secrets.get("modelgate-config").await.unwrap();
    secret.annotations()["modelgate.io/config-checksum"].clone()
}

/// Waits until every data plane serves `checksum`.
async fn all_serve(data_planes: &[&DataPlane], checksum: &str) -> bool {
    wait_until(SETTLE, || async {
        for data_plane in data_planes {
            if data_plane.serves().await.as_deref() != Some(checksum) {
                return false;
            }
        }
        true
    })
    .await
}

/// How long a change took to reach every data plane: from the start of `kubectl apply`, and
/// from its return (the object stored, kubectl's own start-up and discovery excluded).
struct Took {
    from_apply: Duration,
    from_stored: Duration,
}

/// Applies a change and waits (polling every 10 ms) until every data plane serves a config
/// other than `before`.
async fn apply_and_time(
    plane: &ControlPlane,
    data_planes: &[&DataPlane],
    alias: &str,
    before: &str,
) -> Took {
    let applied = Instant::now();
    kubectl_apply(plane, RELEASE_NAMESPACE, &chat_backup(alias));
    let stored = Instant::now();
    let deadline = applied + SETTLE;
    'poll: while Instant::now() < deadline {
        for data_plane in data_planes {
            match data_plane.serves().await {
                Some(checksum) if checksum != before => {}
                _ => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue 'poll;
                }
            }
        }
        return Took {
            from_apply: applied.elapsed(),
            from_stored: stored.elapsed(),
        };
    }
    panic!("change {alias} never reached every data plane");
}

/// p50 and p99 (nearest rank) in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (u128, u128) {
    samples.sort();
    let rank = |p: usize| samples[(samples.len() * p).div_ceil(100) - 1].as_millis();
    (rank(50), rank(99))
}

async fn served_column(client: &Client) -> Option<String> {
    let group = get_json::<ModelGroup>(client, RELEASE_NAMESPACE, "chat-backup").await?;
    Some(group["status"]["served"].as_str()?.to_owned())
}

async fn wait_served_column(client: &Client, want: &str) {
    let held = wait_until(SETTLE, || async {
        served_column(client).await.as_deref() == Some(want)
    })
    .await;
    assert!(
        held,
        "status.served never became {want}: {:?}",
        served_column(client).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_reaches_every_data_plane_in_seconds_and_the_status_counts_them() {
    let plane = ControlPlane::start_private(false).await;
    install_from_readme(&plane);
    let installed = installed_objects(&plane);
    let operator = start_operator_pod(&plane, &installed).await;
    run_script(&plane, &readme_block("apply"));
    let client = plane.client().await;

    // A one-second heartbeat (the chart's is 10 s), so a lapse takes 3 s here.
    let mut data_planes = Vec::new();
    for pod in [
        "modelgate-gateway-a",
        "modelgate-gateway-b",
        "modelgate-gateway-c",
    ] {
        data_planes
            .push(DataPlane::start(&plane, &installed, pod, &["--heartbeat-seconds=1"]).await);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let credentials = secrets.get("modelgate-credentials").await.unwrap();
    for data_plane in &data_planes {
        data_plane.project_credentials(&credentials.data.as_ref().unwrap()["credentials.json"].0);
    }
    let all: Vec<&DataPlane> = data_planes.iter().collect();
    let checksum = published(&client).await;
    assert!(
        all_serve(&all, &checksum).await,
        "not every data plane serves {checksum}:\n{}\n{}",
        data_planes[0].logs(),
        operator.logs()
    );

    // The README's call, with the data plane where the README port-forwards to the Service.
    let call: String = readme_block("call")
        .lines()
        .filter(|line| !line.contains("port-forward"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("localhost:4000", &data_planes[0].api.to_string());
    let answer = run_script(&plane, &call);
    assert!(answer.contains("\"chat.completion\""), "{answer}");

    // Propagation: kubectl apply until all three serve the new checksum.
    let mut took = Vec::new();
    for change in 0..CHANGES {
        let before = published(&client).await;
        took.push(apply_and_time(&plane, &all, &format!("alias-{change}"), &before).await);
        let after = published(&client).await;
        assert_ne!(after, before);
        assert!(
            all_serve(&all, &after).await,
            "not every data plane serves {after}"
        );
    }
    let (p50, p99) = percentiles(took.iter().map(|t| t.from_apply).collect());
    let (stored_p50, stored_p99) = percentiles(took.iter().map(|t| t.from_stored).collect());
    eprintln!(
        "config propagation to {} data planes over {CHANGES} changes: from the start of kubectl apply p50 {p50} ms, p99 {p99} ms; from its return p50 {stored_p50} ms, p99 {stored_p99} ms",
        all.len(),
    );

    // Served: 3/3 on the new checksum.
    wait_served_column(&client, "3/3").await;
    wait_condition::<ModelGroup>(
        &client,
        RELEASE_NAMESPACE,
        "chat-backup",
        "Served",
        "True",
        Some("AllServing"),
    )
    .await;

    // One data plane stops: stale on the next change, then out of the count once it lapses.
    let stopped = &data_planes[2];
    stopped.signal("STOP");
    let before = published(&client).await;
    kubectl_apply(
        &plane,
        RELEASE_NAMESPACE,
        &chat_backup("while-one-is-stopped"),
    );
    let stale = wait_condition::<ModelGroup>(
        &client,
        RELEASE_NAMESPACE,
        "chat-backup",
        "Served",
        "False",
        Some("Stale"),
    )
    .await;
    assert!(
        stale["message"].as_str().unwrap().contains(&stopped.pod),
        "{stale}"
    );
    assert_ne!(published(&client).await, before);
    wait_served_column(&client, "2/2").await;
    wait_condition::<ModelGroup>(
        &client,
        RELEASE_NAMESPACE,
        "chat-backup",
        "Served",
        "True",
        Some("AllServing"),
    )
    .await;
    // It resumes, catches up from its watch, and counts again.
    stopped.signal("CONT");
    wait_served_column(&client, "3/3").await;

    // The API server goes away: the data planes keep serving the last good config and say so.
    let key = String::from_utf8(
        secrets.get("search-team-key").await.unwrap().data.unwrap()["key"]
            .0
            .clone(),
    )
    .unwrap();
    let serving = published(&client).await;
    plane.stop_apiserver();
    for data_plane in &data_planes {
        let disconnected = wait_until(SETTLE, || async {
            data_plane
                .readyz()
                .await
                .is_some_and(|r| r["connected"] == false)
        })
        .await;
        assert!(
            disconnected,
            "{} never reported the lost API server",
            data_plane.pod
        );
        assert_eq!(
            data_plane.metric("modelgate_config_source_connected").await,
            0.0
        );
        let (status, body) = chat(data_plane.api, &key, "chat-backup").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(data_plane.serves().await.as_deref(), Some(serving.as_str()));
    }
    plane.start_apiserver_again().await;
    for data_plane in &data_planes {
        let connected = wait_until(SETTLE, || async {
            data_plane
                .readyz()
                .await
                .is_some_and(|r| r["connected"] == true)
        })
        .await;
        assert!(
            connected,
            "{} never reconnected:\n{}",
            data_plane.pod,
            data_plane.logs()
        );
    }
    let client = plane.client().await;
    kubectl_apply(&plane, RELEASE_NAMESPACE, &chat_backup("after-the-restart"));
    let changed = wait_until(SETTLE, || async {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
        secrets
            .get("modelgate-config")
            .await
            .is_ok_and(|s| s.annotations()["modelgate.io/config-checksum"] != serving)
    })
    .await;
    assert!(
        changed,
        "the operator never published after the restart:\n{}",
        operator.logs()
    );
    let after = published(&client).await;
    assert!(
        all_serve(&all, &after).await,
        "the data planes never picked up {after}"
    );
    for data_plane in &data_planes {
        assert_eq!(
            data_plane.metric("modelgate_config_source_connected").await,
            1.0
        );
    }
}
