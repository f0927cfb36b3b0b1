//! What the gateway knows about models regardless of config: list prices for deployments that
//! declare none, and how a call is costed.

mod price;

use modelgate_crds::compiled::CompiledDeployment;

pub use price::{NANOS_PER_USD, Price, PriceSource, usd};

/// The deployment's own price, else the built-in list price of its model, else none (a
/// self-hosted or mock deployment costs nothing).
pub fn price_of(deployment: &CompiledDeployment) -> Option<Price> {
    match &deployment.pricing {
        Some(p) => Some(Price {
            input: p.input,
            output: p.output,
            cached_input: p.cached_input.unwrap_or(p.input),
            source: PriceSource::Deployment,
        }),
        None => modelgate_crds::catalog::list_price(&deployment.model).map(|p| Price {
            input: p.input,
            output: p.output,
            cached_input: p.cached_input,
            source: PriceSource::Builtin,
        }),
    }
}
