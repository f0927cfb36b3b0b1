//! The config in a cluster: a watch of the namespace's config Secret through the Kubernetes
//! API, so `kubectl apply` reaches traffic in seconds rather than at the kubelet's next Secret
//! sync. The data plane may read that one Secret and nothing else (its Role names it). While the
//! API server is unreachable the last good config keeps serving; the outage shows in the log,
//! the `modelgate_config_source_connected` gauge and `/readyz`, and the watch resumes (with
//! backoff) when the API server returns.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use modelgate_crds::CompiledConfig;
use tokio::sync::watch;

use super::{reload::Reloader, watch::ReloadError};
use crate::telemetry::Metrics;

/// The key of the compiled config in its Secret.
pub const CONFIG_KEY: &str = "config.json";

/// Whether the API server answers the config watch, for `/readyz` and metrics.
#[derive(Clone, Default)]
pub struct Connection(Arc<AtomicBool>);

impl Connection {
    pub fn is_connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Follows the Secret `name` in `namespace` until `shutdown` flips.
pub async fn follow(
    client: Client,
    namespace: String,
    name: String,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    connection: Connection,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => return,
            event = events.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret))) => {
                connected(&connection, &metrics, true);
                match read(&secret).and_then(|c| Ok(reloader.config(c, &[])?)) {
                    Ok(()) => metrics.config_reload(true),
                    Err(error) => {
                        metrics.config_reload(false);
                        tracing::error!(%error, secret = %name, "config Secret rejected; keeping the last good config");
                    }
                }
            }
            Some(Ok(watcher::Event::InitDone | watcher::Event::Init)) => {
                connected(&connection, &metrics, true);
            }
            Some(Ok(watcher::Event::Delete(_))) => {
                tracing::warn!(secret = %name, "config Secret deleted; keeping the last good config");
            }
            Some(Err(error)) => {
                if connection.0.load(Ordering::Relaxed) {
                    tracing::warn!(%error, "lost the config watch; serving the last good config until the API server answers");
                }
                connected(&connection, &metrics, false);
            }
            None => return,
        }
    }
}

fn connected(connection: &Connection, metrics: &Metrics, up: bool) {
    if connection.0.swap(up, Ordering::Relaxed) != up {
        metrics.config_source_connected(up);
        if up {
            tracing::info!("config watch connected");
        }
    }
}

fn read(secret: &Secret) -> Result<CompiledConfig, ReloadError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    Ok(CompiledConfig::from_json(bytes)?)
}
