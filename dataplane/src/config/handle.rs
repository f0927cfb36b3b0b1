//! One `ArcSwap` holds the current snapshot. Handlers take one `load_full()` per request, so a
//! request runs start to finish on the config it started with.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::Snapshot;

/// Shared handle to the current snapshot; `None` until the first good config is loaded.
#[derive(Clone, Default)]
pub struct ConfigHandle(Arc<ArcSwapOption<Snapshot>>);

impl ConfigHandle {
    /// The snapshot for one request.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.0.load_full()
    }

    /// Commits a prepared snapshot. Cannot fail: everything fallible happened while building it.
    pub fn commit(&self, snapshot: Snapshot) {
        self.0.store(Some(Arc::new(snapshot)));
    }

    /// Checksum of the current config, if any.
    pub fn checksum(&self) -> Option<String> {
        self.0.load().as_ref().map(|s| s.checksum().to_owned())
    }
}
