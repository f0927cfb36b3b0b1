//! What the replicas of a fleet share through Redis besides budgets and rate limits: the one
//! connection every Redis user of a replica shares, breaker cooldowns pushed to every replica,
//! and deployment quotas counted across the fleet. Nothing here is read on the request path.

mod connection;
mod cooldowns;
mod usage;

pub use connection::{ConnectionError, SharedConnection};
pub use cooldowns::{Cooldown, share_cooldowns};
pub use usage::share_deployment_usage;
