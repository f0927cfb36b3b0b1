//! Sidecar injection, pure: which pods ask for the data plane sidecar ([`annotations`]), what is
//! injected ([`sidecar`]), and the pod each pod becomes ([`decide`]). The webhook
//! (`crate::webhook`) serves it.

pub mod annotations;
pub mod decide;
pub mod sidecar;
