//! Follows a file (a standalone config, or a cluster's mounted credentials) and hands its bytes
//! to a reader on every change. A bad file keeps the last good snapshot and is logged and
//! counted, once per change.
//!
//! The parent directory is watched, not the file, so replacing the file through a symlink swap
//! (how the kubelet updates a mounted Secret: `..data` -> new timestamped dir) is seen. Only
//! events that can change the file wake the loader: its own reads (inotify reports every open)
//! and metadata changes do not, so an idle data plane stays asleep. A slow poll backs the watcher
//! up on filesystems that do not deliver events; it only `stat`s the file, and reads it when the
//! file's identity, size or modification time moved.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{
    EventKind, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode, ModifyKind},
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::telemetry::Metrics;

/// The name of the kubelet's symlink to the current version of a mounted volume.
const KUBELET_DATA_LINK: &str = "..data";

/// Why a config file (or a config Secret) could not be used.
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
    Compiled(#[from] modelgate_crds::compiled::CompiledConfigError),
    #[error("the credentials are not valid JSON: {0}")]
    Credentials(#[from] serde_json::Error),
    #[error(transparent)]
    Snapshot(#[from] super::SnapshotError),
}

/// What a followed file's bytes are for.
pub type FileReader = Box<dyn Fn(&[u8]) -> Result<(), ReloadError> + Send + Sync>;

/// Reads a file whenever it changes and hands its bytes to its reader.
pub struct FileFollower {
    path: PathBuf,
    read: FileReader,
    metrics: Arc<Metrics>,
    /// How often the file is checked without a change event; `None` trusts the events alone.
    poll: Option<Duration>,
    seen: tokio::sync::Mutex<Seen>,
}

/// What the loader last looked at.
#[derive(Default)]
struct Seen {
    /// The digest of the last bytes tried, good or bad: the same bytes are neither loaded nor
    /// reported twice.
    digest: Option<[u8; 32]>,
    /// The file's stamp when they were read: the poll reads again only when it moved.
    stamp: Option<FileStamp>,
}

/// Identity, size and modification time of the file a path resolves to.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    async fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = tokio::fs::metadata(path).await.ok()?;
        Some(Self {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl FileFollower {
    pub fn new(
        path: PathBuf,
        read: FileReader,
        metrics: Arc<Metrics>,
        poll: Option<Duration>,
    ) -> Self {
        Self {
            path,
            read,
            metrics,
            poll: poll.filter(|p| !p.is_zero()),
            seen: tokio::sync::Mutex::default(),
        }
    }

    /// Reads the file if its bytes changed since the last try. Returns whether its reader took
    /// new bytes.
    async fn reload(&self) -> Result<bool, ReloadError> {
        let mut seen = self.seen.lock().await;
        let stamp = FileStamp::of(&self.path).await;
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|source| ReloadError::Read {
                path: self.path.display().to_string(),
                source,
            })?;
        if bytes.is_empty() {
            // Truncated by a writer that has not written yet: its next event brings the content.
            return Ok(false);
        }
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        seen.stamp = stamp;
        if seen.digest.replace(digest) == Some(digest) {
            return Ok(false);
        }
        (self.read)(&bytes)?;
        Ok(true)
    }

    /// Reloads and records the outcome; errors are logged, the last good snapshot stays.
    pub async fn reload_and_record(&self) {
        match self.reload().await {
            Ok(true) => self.metrics.config_reload(true),
            Ok(false) => {}
            Err(error) => {
                self.metrics.config_reload(false);
                tracing::error!(%error, path = %self.path.display(), "file rejected; keeping the last good config");
            }
        }
    }

    /// The poll's check: reloads only when the file's stamp moved since it was last read.
    async fn poll_and_record(&self) {
        let stamp = FileStamp::of(&self.path).await;
        let unchanged = {
            let seen = self.seen.lock().await;
            stamp.is_some() && seen.stamp == stamp
        };
        if !unchanged {
            self.reload_and_record().await;
        }
    }

    /// Subscribes to the file's change events. Done before the first load, so no change made
    /// after that load can be missed.
    pub fn subscribe(&self) -> Subscription {
        let (tx, events) = mpsc::channel::<()>(1);
        let watcher = match watch_dir(&self.path, tx) {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config directory; relying on the poll");
                None
            }
        };
        Subscription {
            _watcher: watcher,
            events,
        }
    }

    /// Reloads on every change event (and poll) until `shutdown` flips.
    pub async fn watch(
        self: Arc<Self>,
        mut subscription: Subscription,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut poll = self.poll.map(|every| {
            let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll
        });
        loop {
            let tick = async {
                match &mut poll {
                    Some(poll) => poll.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = subscription.events.recv() => self.reload_and_record().await,
                _ = tick => self.poll_and_record().await,
            }
        }
    }
}

/// The config file's change events, coalesced into wake-ups.
pub struct Subscription {
    _watcher: Option<notify::RecommendedWatcher>,
    events: mpsc::Receiver<()>,
}

/// Watches the directory holding `path`; every event that can change the file becomes one
/// coalesced wake-up.
fn watch_dir(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(std::ffi::OsStr::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| may_change(&e, name.as_deref())) {
            // A full channel already holds a pending wake-up; dropping this one coalesces.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether `event` can have changed what `name` (in the watched directory) reads as: a write,
/// create, rename or removal of the file itself or of the kubelet's `..data` link. Opens and
/// reads (the loader's own included), metadata changes and other files' events cannot.
fn may_change(event: &notify::Event, name: Option<&std::ffi::OsStr>) -> bool {
    let kind = match event.kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        // A writer closing the file; the loader opens it read-only, which never reports this.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    };
    kind && (event.paths.is_empty()
        || event.paths.iter().any(|path| {
            let file = path.file_name();
            file == name || file == Some(std::ffi::OsStr::new(KUBELET_DATA_LINK))
        }))
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, file: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from("/etc/modelgate").join(file))
    }

    #[test]
    fn only_events_that_can_change_the_file_wake_the_loader() {
        let name = Some(std::ffi::OsStr::new("config.yaml"));
        let wakes = [
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ];
        for kind in wakes {
            assert!(may_change(&event(kind, "config.yaml"), name), "{kind:?}");
        }
        let kubelet_swap = event(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "..data",
        );
        assert!(may_change(&kubelet_swap, name));
        for quiet in [
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!may_change(&event(quiet, "config.yaml"), name), "{quiet:?}");
        }
        let other_file = event(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            "notes.txt",
        );
        assert!(!may_change(&other_file, name));
    }
}
