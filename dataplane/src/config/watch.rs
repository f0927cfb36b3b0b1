//! Loads the config file and reloads it on change: fallible prepare (read, compile, index), then
//! an infallible commit. A bad file keeps the last good snapshot and is logged and counted.
//!
//! The parent directory is watched, not the file, so replacing the file through a symlink swap
//! (how the kubelet updates a mounted Secret: `..data` -> new timestamped dir) is seen. A slow
//! poll backs the watcher up on filesystems that do not deliver events.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::{ConfigHandle, Snapshot};
use crate::{route::signals::SignalRegistry, telemetry::Metrics};

/// How often the file is re-read even without a change event.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] modelgate_crds::LoadError),
    #[error(transparent)]
    Snapshot(#[from] super::SnapshotError),
}

/// Reads, compiles and commits the config file.
pub struct ConfigLoader {
    path: PathBuf,
    handle: ConfigHandle,
    metrics: Arc<Metrics>,
    signals: Arc<SignalRegistry>,
    last_digest: tokio::sync::Mutex<Option<[u8; 32]>>,
}

impl ConfigLoader {
    pub fn new(
        path: PathBuf,
        handle: ConfigHandle,
        metrics: Arc<Metrics>,
        signals: Arc<SignalRegistry>,
    ) -> Self {
        Self {
            path,
            handle,
            metrics,
            signals,
            last_digest: tokio::sync::Mutex::new(None),
        }
    }

    /// Loads the file if its bytes changed since the last good load. Returns whether a new
    /// snapshot was committed.
    async fn reload(&self) -> Result<bool, ReloadError> {
        let mut last = self.last_digest.lock().await;
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|source| ReloadError::Read {
                path: self.path.display().to_string(),
                source,
            })?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if *last == Some(digest) {
            return Ok(false);
        }
        let env = |name: &str| std::env::var(name).ok();
        let (config, reports) = modelgate_crds::load_config(&bytes, &env, jiff::Timestamp::now())?;
        for report in reports.iter().filter(|r| !r.is_accepted()) {
            if let Err(rejection) = &report.outcome {
                tracing::warn!(
                    kind = report.kind.as_str(),
                    namespace = %report.namespace,
                    name = %report.name,
                    reason = rejection.reason.as_str(),
                    message = %rejection.message,
                    "object rejected from config"
                );
            }
        }
        self.metrics
            .set_rejected_objects(reports.iter().filter(|r| !r.is_accepted()).count());
        let snapshot = Snapshot::build(config, &self.signals)?;
        for deployment in snapshot.builtin_priced() {
            tracing::info!(%deployment, "deployment has no pricing: costed at the built-in list price of its model");
        }
        let checksum = snapshot.checksum().to_owned();
        let groups = snapshot.groups().len();
        self.handle.commit(snapshot);
        *last = Some(digest);
        tracing::info!(%checksum, groups, path = %self.path.display(), "config loaded");
        Ok(true)
    }

    /// Reloads and records the outcome; errors are logged, the last good snapshot stays.
    pub async fn reload_and_record(&self) {
        match self.reload().await {
            Ok(true) => self.metrics.config_reload(true),
            Ok(false) => {}
            Err(error) => {
                self.metrics.config_reload(false);
                tracing::error!(%error, path = %self.path.display(), "config rejected; keeping the last good config");
            }
        }
    }

    /// Watches the file until `shutdown` flips, reloading on every change.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut events) = mpsc::channel::<()>(1);
        let _watcher = match watch_dir(&self.path, tx) {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config directory; falling back to polling");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = events.recv() => self.reload_and_record().await,
                _ = poll.tick() => self.reload_and_record().await,
            }
        }
    }
}

/// Watches the directory holding `path`; every event becomes one coalesced wake-up.
fn watch_dir(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already holds a pending wake-up; dropping this one coalesces.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
