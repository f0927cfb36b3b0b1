//! Where the config comes from, started: a file (standalone, or a mounted Secret), or in a
//! cluster the namespace's config Secret through the API with its credentials from a mounted
//! directory, and a heartbeat saying what is served.

use std::{path::PathBuf, sync::Arc, time::Duration};

use modelgate_crds::credentials::CredentialBundle;
use tokio::{sync::watch, task::JoinHandle};

use super::{
    heartbeat::{self, Heartbeat},
    kube::{self as kube_source, Connection},
    reload::Reloader,
    watch::{FileFollower, FileReader},
};
use crate::telemetry::Metrics;

/// The file the credentials Secret projects into its mount.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// Where the config comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A compiled config (JSON) or the CRs as YAML, compiled here; followed for changes.
    File(PathBuf),
    /// The namespace's config Secret through the Kubernetes API.
    Kubernetes(ClusterSource),
}

#[derive(Clone, Debug)]
pub struct ClusterSource {
    pub namespace: String,
    /// The config Secret (`modelgate-config`).
    pub secret: String,
    /// Where the credentials Secret is mounted; without it deployments run without credentials.
    pub credentials_dir: Option<PathBuf>,
    /// The pod's heartbeat Lease, when the pod is named.
    pub heartbeat: Option<(String, Duration)>,
}

/// How the source is doing, for `/readyz`.
#[derive(Clone)]
pub enum SourceStatus {
    File,
    Kubernetes(Connection),
}

/// A started source: its tasks, and how it is doing.
pub struct Running {
    pub tasks: Vec<JoinHandle<()>>,
    pub status: SourceStatus,
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
#[error("no Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
pub struct SourceError(#[from] kube::Error);

/// Starts `source`: a file is loaded once before this returns (a bad one leaves the gateway
/// unready, not dead); a Secret arrives with the watch's first list.
pub async fn start(
    source: &ConfigSource,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    poll: Option<Duration>,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, SourceError> {
    match source {
        ConfigSource::File(path) => {
            let reload = reloader.clone();
            let read: FileReader = Box::new(move |bytes| {
                let env = |name: &str| std::env::var(name).ok();
                let (config, reports) =
                    modelgate_crds::load_config(bytes, &env, jiff::Timestamp::now())?;
                Ok(reload.config(config, &reports)?)
            });
            let task = follow(path.clone(), read, metrics, poll, shutdown).await;
            Ok(Running {
                tasks: vec![task],
                status: SourceStatus::File,
            })
        }
        ConfigSource::Kubernetes(cluster) => {
            let client = kube::Client::try_default().await?;
            let mut tasks = Vec::new();
            if let Some(dir) = &cluster.credentials_dir {
                let reload = reloader.clone();
                let read: FileReader = Box::new(move |bytes| {
                    Ok(reload.credentials(CredentialBundle::from_json(bytes)?)?)
                });
                let path = dir.join(CREDENTIALS_FILE);
                tasks.push(follow(path, read, metrics.clone(), poll, shutdown.clone()).await);
            }
            let connection = Connection::default();
            tasks.push(tokio::spawn(kube_source::follow(
                client.clone(),
                cluster.namespace.clone(),
                cluster.secret.clone(),
                reloader.clone(),
                metrics,
                connection.clone(),
                shutdown.clone(),
            )));
            if let Some((pod, interval)) = &cluster.heartbeat {
                let beat = Heartbeat {
                    namespace: cluster.namespace.clone(),
                    pod: pod.clone(),
                    interval: *interval,
                };
                tasks.push(tokio::spawn(heartbeat::beat(
                    client,
                    beat,
                    reloader.served(),
                    shutdown,
                )));
            }
            Ok(Running {
                tasks,
                status: SourceStatus::Kubernetes(connection),
            })
        }
    }
}

/// Subscribes to a file's changes, reads it once, and follows it.
async fn follow(
    path: PathBuf,
    read: FileReader,
    metrics: Arc<Metrics>,
    poll: Option<Duration>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let follower = Arc::new(FileFollower::new(path, read, metrics, poll));
    let changes = follower.subscribe();
    follower.reload_and_record().await;
    tokio::spawn(follower.watch(changes, shutdown))
}
