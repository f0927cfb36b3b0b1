//! Time limits. Per attempt (connect, first byte, idle between chunks): the deployment's own,
//! else its caller's policy's, else the defaults. Across all attempts of a request: the policy's
//! `total`, else the default.

use std::time::Duration;

use crate::{
    config::{Deployment, KeyEntry},
    provider::{AttemptTimeouts, DEFAULT_CONNECT_TIMEOUT},
};

const DEFAULT_FIRST_BYTE: Duration = Duration::from_secs(300);
const DEFAULT_IDLE: Duration = Duration::from_secs(120);
/// Deadline across every attempt of one request when the policy sets none.
const DEFAULT_TOTAL: Duration = Duration::from_secs(600);

/// The time limits of one attempt of `caller`'s request to `deployment`.
pub fn attempt_timeouts(caller: &KeyEntry, deployment: &Deployment) -> AttemptTimeouts {
    let own = &deployment.spec.timeouts;
    let policy = caller.policy.as_ref().map(|p| &p.spec.timeouts);
    let pick = |own: Option<u64>, from_policy: Option<u64>, default: Duration| {
        own.or(from_policy).map_or(default, Duration::from_millis)
    };
    AttemptTimeouts {
        first_byte: pick(
            own.first_byte_ms,
            policy.and_then(|p| p.first_byte_ms),
            DEFAULT_FIRST_BYTE,
        ),
        idle: pick(own.idle_ms, policy.and_then(|p| p.idle_ms), DEFAULT_IDLE),
        connect: pick(
            own.connect_ms,
            policy.and_then(|p| p.connect_ms),
            DEFAULT_CONNECT_TIMEOUT,
        ),
    }
}

/// How long all attempts of `caller`'s request may take together.
pub fn total_timeout(caller: &KeyEntry) -> Duration {
    caller
        .policy
        .as_ref()
        .and_then(|p| p.spec.timeouts.total_ms)
        .map_or(DEFAULT_TOTAL, Duration::from_millis)
}
