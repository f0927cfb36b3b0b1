//! modelgate's data plane: an OpenAI-compatible gateway that routes each call across provider
//! deployments. `gateway` composes it; a request goes `server` -> `api` (a front door) ->
//! `pipeline` (auth, route, cache, admit, execute) -> `finish`, and `docs/architecture.md`
//! lists which module may import which.

pub mod api;
#[cfg(test)]
mod architecture;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod decision;
pub mod error;
pub mod finish;
pub mod fleet;
mod gateway;
pub mod limits;
pub mod pipeline;
pub mod provider;
pub mod request;
pub mod resilience;
pub mod route;
pub mod server;
pub mod signals;
pub mod sse;
mod sync;
pub mod telemetry;
pub mod trace;

pub use gateway::{CacheBackend, ClientLimits, Gateway, GatewayOptions, StartError, StateBackend};
