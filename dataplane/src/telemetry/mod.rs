//! Observation: Prometheus metrics with bounded labels. Observes, never decides; imports no stage
//! of the request path.

mod metrics;

pub use metrics::Metrics;
