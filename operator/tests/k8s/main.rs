//! The operator against a real kube-apiserver + etcd (one control plane for this binary, one
//! namespace per test, one operator process per test scoped to it).

// A panic in a test helper is a failed assertion with a backtrace, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chart;
mod crd_validation;
mod delivery;
mod follow;
mod inject;
mod install;
mod keys;
mod kubectl;
mod leader;
mod publish;
mod rbac;
mod release;
mod secret_sweep;
mod sidecar_pod;
mod spend;
mod status;
mod support;
mod tenancy;
