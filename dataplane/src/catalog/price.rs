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
    /// The built-in list price table.
    Builtin,
}

impl PriceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::Builtin => "builtin",
        }
    }
}

/// USD per 1M tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_input: f64,
    pub source: PriceSource,
}

impl Price {
    /// The cost of `usage` in nano-dollars. Cached prompt tokens are part of `prompt_tokens`
    /// and reasoning tokens part of `completion_tokens` (OpenAI's accounting), so each token is
    /// priced exactly once.
    pub fn cost_nanos(&self, usage: &Usage) -> i64 {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let micro_usd = uncached as f64 * self.input
            + cached as f64 * self.cached_input
            + usage.completion_tokens as f64 * self.output;
        // Prices are per 1M tokens: tokens * price is in micro-dollars.
        to_nanos(micro_usd / 1e6)
    }

    /// The most a call can cost: `prompt_tokens` in and `max_output_tokens` out, uncached.
    pub fn worst_case_nanos(&self, prompt_tokens: u64, max_output_tokens: u64) -> i64 {
        to_nanos((prompt_tokens as f64 * self.input + max_output_tokens as f64 * self.output) / 1e6)
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
        Price {
            input: 2.0,
            output: 8.0,
            cached_input: 0.5,
            source: PriceSource::Deployment,
        }
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
