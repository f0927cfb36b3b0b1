//! How a call is costed: the deployment's own price, else the model catalog's list price that
//! the compiler resolved into the config.

mod price;

use modelgate_crds::{catalog::PriceTier, compiled::CompiledDeployment};

pub use price::{MAX_TIERS, NANOS_PER_USD, Price, PriceSource, Rates, Tier, usd};

/// The deployment's own price, else its model's list price, else none (a self-hosted or mock
/// deployment costs nothing).
pub fn price_of(deployment: &CompiledDeployment) -> Option<Price> {
    if let Some(p) = &deployment.pricing {
        let base = Rates {
            input: p.input,
            output: p.output,
            cached_input: p.cached_input.unwrap_or(p.input),
        };
        return Some(Price::flat(base, PriceSource::Deployment));
    }
    let list = deployment.list_price()?;
    let mut price = Price::flat(
        Rates {
            input: list.input,
            output: list.output,
            cached_input: list.cached_input,
        },
        PriceSource::Catalog,
    );
    for (slot, tier) in price.tiers.iter_mut().zip(&list.tiers) {
        *slot = Some(tier_of(tier));
    }
    Some(price)
}

fn tier_of(tier: &PriceTier) -> Tier {
    Tier {
        above_input_tokens: tier.above_input_tokens,
        rates: Rates {
            input: tier.input,
            output: tier.output,
            cached_input: tier.cached_input,
        },
    }
}
