//! Per-call cost from a deployment's prices and the usage the provider reported. Money is counted
//! in integer nano-dollars (1e-9 USD), so shared counters add exactly, in memory and in Redis.

use crate::provider::Usage;

/// Nano-dollars per dollar.
pub const NANOS_PER_USD: f64 = 1e9;

/// Where a deployment's price comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriceSource {
    /// The deployment's own `pricing`.
    Deployment,
    /// The model catalog's list price (genai-prices).
    Catalog,
}

impl PriceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::Catalog => "catalog",
        }
    }
}

/// USD per 1M tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_input: f64,
}

/// Rates for a whole call whose prompt has more than `above_input_tokens` tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tier {
    pub above_input_tokens: u64,
    pub rates: Rates,
}

/// The most tiers a price keeps (the catalog's models have at most one).
pub const MAX_TIERS: usize = 2;

/// A deployment's price: base rates, and the tiers a long prompt moves the whole call into.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub base: Rates,
    /// Ascending thresholds; unused slots are `None`.
    pub tiers: [Option<Tier>; MAX_TIERS],
    pub source: PriceSource,
}

impl Price {
    /// A price without tiers.
    pub fn flat(base: Rates, source: PriceSource) -> Self {
        Self {
            base,
            tiers: [None; MAX_TIERS],
            source,
        }
    }

    /// The rates of a call with `prompt_tokens` prompt tokens.
    pub fn rates_for(&self, prompt_tokens: u64) -> Rates {
        self.tiers
            .iter()
            .flatten()
            .rfind(|t| prompt_tokens > t.above_input_tokens)
            .map_or(self.base, |t| t.rates)
    }

    /// The cost of `usage` in nano-dollars. Cached prompt tokens are part of `prompt_tokens`
    /// and reasoning tokens part of `completion_tokens` (OpenAI's accounting), so each token is
    /// priced exactly once.
    pub fn cost_nanos(&self, usage: &Usage) -> i64 {
        let rates = self.rates_for(usage.prompt_tokens);
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let micro_usd = uncached as f64 * rates.input
            + cached as f64 * rates.cached_input
            + usage.completion_tokens as f64 * rates.output;
        // Prices are per 1M tokens: tokens * price is in micro-dollars.
        to_nanos(micro_usd / 1e6)
    }

    /// The most a call can cost: `prompt_tokens` in and `max_output_tokens` out, uncached.
    pub fn worst_case_nanos(&self, prompt_tokens: u64, max_output_tokens: u64) -> i64 {
        to_nanos(self.estimate_usd(prompt_tokens, max_output_tokens))
    }

    /// USD of `prompt_tokens` in and `output_tokens` out, uncached.
    pub fn estimate_usd(&self, prompt_tokens: u64, output_tokens: u64) -> f64 {
        let rates = self.rates_for(prompt_tokens);
        (prompt_tokens as f64 * rates.input + output_tokens as f64 * rates.output) / 1e6
    }
}

fn to_nanos(usd: f64) -> i64 {
    let nanos = (usd * NANOS_PER_USD).ceil();
    if nanos.is_finite() && nanos > 0.0 {
        // Saturating: a price so large it overflows is a price no budget admits.
        nanos.min(i64::MAX as f64) as i64
    } else {
        0
    }
}

/// Nano-dollars as USD, for headers, logs and metrics.
pub fn usd(nanos: i64) -> f64 {
    nanos as f64 / NANOS_PER_USD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{CompletionDetails, PromptDetails};

    fn price() -> Price {
        Price::flat(
            Rates {
                input: 2.0,
                output: 8.0,
                cached_input: 0.5,
            },
            PriceSource::Deployment,
        )
    }

    #[test]
    fn a_prompt_above_a_tier_prices_the_whole_call_at_the_tier() {
        let mut tiered = price();
        tiered.tiers[0] = Some(Tier {
            above_input_tokens: 200_000,
            rates: Rates {
                input: 4.0,
                output: 16.0,
                cached_input: 1.0,
            },
        });
        let call = |prompt_tokens| Usage {
            prompt_tokens,
            completion_tokens: 1_000,
            ..Usage::default()
        };
        // At the threshold: base rates (200,000 * 2 + 1,000 * 8 micro-dollars).
        assert_eq!(tiered.cost_nanos(&call(200_000)), 408_000_000);
        // One token above: every token at the tier's rates.
        assert_eq!(tiered.cost_nanos(&call(200_001)), 816_004_000);
        assert_eq!(tiered.worst_case_nanos(300_000, 0), 1_200_000_000);
    }

    #[test]
    fn cached_prompt_tokens_are_priced_once_at_the_cached_rate() {
        let usage = Usage {
            prompt_tokens: 1_000,
            completion_tokens: 500,
            total_tokens: 1_500,
            prompt_tokens_details: Some(PromptDetails { cached_tokens: 400 }),
            completion_tokens_details: Some(CompletionDetails {
                reasoning_tokens: 200,
            }),
        };
        // 600 * 2 + 400 * 0.5 + 500 * 8 = 5400 micro-dollars (reasoning is inside the 500).
        assert_eq!(price().cost_nanos(&usage), 5_400_000);
    }

    #[test]
    fn the_worst_case_prices_every_token_uncached() {
        assert_eq!(price().worst_case_nanos(1_000, 1_000), 10_000_000);
        assert_eq!(usd(10_000_000), 0.01);
    }

    #[test]
    fn a_cached_count_above_the_prompt_cannot_make_cost_negative() {
        let usage = Usage {
            prompt_tokens: 10,
            prompt_tokens_details: Some(PromptDetails { cached_tokens: 50 }),
            ..Usage::default()
        };
        assert_eq!(price().cost_nanos(&usage), 5_000);
    }
}
