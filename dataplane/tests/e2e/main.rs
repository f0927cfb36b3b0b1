//! End-to-end tests of the data plane: one test binary, real HTTP, an in-process fake provider.

// A panic in a test helper is a failed assertion with a backtrace, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod cache;
mod catalog;
mod drain;
mod fleet;
mod hostile;
mod limits;
mod metrics;
mod otel;
mod reload;
mod resilience;
mod routing;
mod streaming;
mod support;
