//! Observation: Prometheus metrics with bounded labels, and OpenTelemetry spans and metrics. Observes, never decides; imports no stage
//! of the request path.

mod finished;
mod live;
mod metrics;
mod otel;

pub use finished::{Attempt, Finished};
pub use live::{DeploymentRef, LiveSource};
pub use metrics::Metrics;
pub use otel::{Otel, OtelOptions};
