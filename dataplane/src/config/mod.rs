//! The runtime view of the config: an immutable, indexed [`Snapshot`] built (fallibly) from a
//! [`CompiledConfig`], held in one [`ConfigHandle`] that is swapped (infallibly) on reload.

mod handle;
pub mod heartbeat;
pub mod kube;
mod limits;
pub mod reload;
mod snapshot;
pub mod source;
pub mod watch;

pub use handle::ConfigHandle;
pub use limits::KeyLimits;
pub use snapshot::{
    Deployment, Group, GroupId, HotFields, KeyEntry, Policy, Snapshot, SnapshotError,
    TagRequirement,
};
