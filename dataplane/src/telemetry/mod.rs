//! Observation: Prometheus metrics with bounded labels. Observes, never decides; imports no stage
//! of the request path.

mod finished;
mod live;
mod metrics;

pub use finished::Finished;
pub use live::LiveSource;
pub use metrics::Metrics;
