//! modelgate's data plane: an OpenAI-compatible gateway that routes each call across provider
//! deployments. The request path is a straight line, one module per concern:
//! `server` -> `auth` -> `api` -> `route` -> `resilience` -> `provider`, observed by `telemetry`.

pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod limits;
pub mod provider;
pub mod resilience;
pub mod route;
pub mod server;
pub mod sse;
mod sync;
pub mod telemetry;

pub use server::{CacheBackend, Gateway, GatewayOptions, StartError, StateBackend};
