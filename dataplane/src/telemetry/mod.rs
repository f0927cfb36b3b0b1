//! Observation only: metrics and the decision log. Nothing here decides or blocks a request.

mod decision;
mod metrics;

pub use decision::{AttemptRecord, DecisionLog, DecisionRecord, DecisionTarget};
pub use metrics::Metrics;
