//! List prices from the `genai-prices` crate (pydantic's maintained database), resolved once per
//! compile into flat per-1M-token rates and the tiers a long prompt moves the whole call into.
//!
//! The crate prices a whole call from its usage; the compiled config needs rates the data plane
//! can apply without the database (decoding it costs tens of milliseconds and megabytes, and a
//! sidecar never loads it). So the rates are read off the calculator by pricing probe calls:
//! 1,000 tokens at a time, and the tier thresholds found by bisection over the prompt size.

use genai_prices::{Calculator, PriceRequest, Usage, UsageKey};
use serde::{Deserialize, Serialize};

use crate::model_group::ProviderKind;

/// A model's list price in USD per 1M tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListPrice {
    /// The genai-prices model it was priced as, `provider/model`.
    pub model: String,
    pub input: f64,
    pub output: f64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_input: f64,
    /// Higher rates for the whole call once its prompt is longer than a threshold (ascending).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<PriceTier>,
}

/// The rates of a call whose prompt has more than `above_input_tokens` tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceTier {
    pub above_input_tokens: u64,
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
}

/// Probe size: small enough to sit below every tier, large enough for exact rates.
const PROBE: u64 = 1_000;
/// The largest prompt probed for tiers.
const LARGEST_PROMPT: u64 = 16_000_000;
const MAX_TIERS: usize = 4;

/// genai-prices' provider for a deployment: by provider kind, and for an OpenAI-compatible
/// server by its URL (Groq, Together, Fireworks, ... are known by their API address).
fn provider_id(provider: ProviderKind) -> Option<&'static str> {
    Some(match provider {
        ProviderKind::Openai => "openai",
        ProviderKind::Azure => "azure",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini | ProviderKind::Vertex => "google",
        ProviderKind::Bedrock => "aws",
        ProviderKind::Cohere => "cohere",
        ProviderKind::Mistral => "mistral",
        ProviderKind::Deepseek => "deepseek",
        ProviderKind::OpenaiCompatible | ProviderKind::Mock => return None,
    })
}

/// What genai-prices knows about one model at one provider.
pub(super) struct Priced {
    pub price: ListPrice,
    pub context_window: Option<u64>,
}

/// The list price of `model` at `provider` in effect at `now`, or `None` when the database
/// does not know it (a self-hosted server, the mock, a private fine-tune).
pub(super) fn lookup(
    provider: ProviderKind,
    model: &str,
    base_url: Option<&str>,
    now: jiff::Timestamp,
) -> Option<Priced> {
    // A known provider's API is public and https; a plain-http server is self-hosted, and
    // telling so here keeps the database unloaded for configs that only have such servers.
    let by_url = match provider {
        ProviderKind::OpenaiCompatible => Some(base_url.filter(|u| u.starts_with("https://"))?),
        _ => None,
    };
    if by_url.is_none() && provider_id(provider).is_none() {
        return None;
    }
    let probe = Probe {
        calculator: Calculator::bundled(),
        model: model.strip_prefix("models/").unwrap_or(model),
        provider: provider_id(provider),
        url: by_url,
        now: std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(now.as_second().max(0).unsigned_abs()),
    };
    let (base, matched) = probe.rates(PROBE)?;
    let context_window = probe
        .calculator
        .find_provider(Some(&matched.0), None)
        .ok()
        .flatten()
        .and_then(|p| p.models().find(|m| m.id() == matched.1))
        .and_then(|m| m.context_window());
    Some(Priced {
        price: ListPrice {
            model: format!("{}/{}", matched.0, matched.1),
            input: base.input,
            output: base.output,
            cached_input: base.cached_input,
            tiers: probe.tiers(&base),
        },
        context_window,
    })
}

struct Probe<'a> {
    calculator: &'a Calculator,
    model: &'a str,
    provider: Option<&'a str>,
    url: Option<&'a str>,
    now: std::time::SystemTime,
}

#[derive(Clone, Copy, PartialEq)]
struct Rates {
    input: f64,
    output: f64,
    cached_input: f64,
}

impl Rates {
    fn differs(&self, other: &Self) -> bool {
        let apart = |a: f64, b: f64| (a - b).abs() > 1e-9 * a.abs().max(b.abs()).max(1e-9);
        apart(self.input, other.input)
            || apart(self.output, other.output)
            || apart(self.cached_input, other.cached_input)
    }
}

impl Probe<'_> {
    /// USD of a call with `input` prompt tokens (`cached` of them from the cache) and `output`
    /// completion tokens, and the (provider, model) it was priced as.
    fn cost(&self, input: u64, cached: u64, output: u64) -> Option<(f64, (String, String))> {
        let usage = Usage::from([
            (UsageKey::INPUT_TOKENS, input as f64),
            (UsageKey::CACHE_READ_TOKENS, cached as f64),
            (UsageKey::OUTPUT_TOKENS, output as f64),
        ]);
        let mut request = PriceRequest::new(self.model, &usage).with_timestamp(self.now);
        if let Some(id) = self.provider {
            request = request.with_provider_id(id);
        }
        if let Some(url) = self.url {
            request = request.with_provider_api_url(url);
        }
        let priced = self.calculator.calculate(&request).ok()?;
        Some((priced.total_price, (priced.provider_id, priced.model_id)))
    }

    /// The per-1M rates of a call whose prompt has `prompt` tokens.
    fn rates(&self, prompt: u64) -> Option<(Rates, (String, String))> {
        let (input, matched) = self.cost(prompt, 0, 0)?;
        let (cached, _) = self.cost(prompt, prompt, 0)?;
        let (with_output, _) = self.cost(prompt, 0, PROBE)?;
        let per_million = |usd: f64, tokens: u64| usd / tokens as f64 * 1e6;
        let rates = Rates {
            input: per_million(input, prompt),
            output: per_million(with_output - input, PROBE),
            cached_input: per_million(cached, prompt),
        };
        Some((rates, matched))
    }

    /// The thresholds where the rates change, found by bisection: each tier's rates hold from
    /// its threshold up to the next one.
    fn tiers(&self, base: &Rates) -> Vec<PriceTier> {
        let mut tiers = Vec::new();
        let (mut below, mut current) = (PROBE, *base);
        while tiers.len() < MAX_TIERS {
            let changed = |prompt: u64| {
                self.rates(prompt)
                    .is_some_and(|(rates, _)| rates.differs(&current))
            };
            if !changed(LARGEST_PROMPT) {
                break;
            }
            let (mut low, mut high) = (below, LARGEST_PROMPT);
            while high - low > 1 {
                let middle = low + (high - low) / 2;
                if changed(middle) {
                    high = middle;
                } else {
                    low = middle;
                }
            }
            let Some((rates, _)) = self.rates(high) else {
                break;
            };
            tiers.push(PriceTier {
                above_input_tokens: low,
                input: rates.input,
                output: rates.output,
                cached_input: rates.cached_input,
            });
            (below, current) = (high, rates);
        }
        tiers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    fn price(provider: ProviderKind, model: &str) -> Option<ListPrice> {
        lookup(provider, model, None, now()).map(|p| p.price)
    }

    #[test]
    fn known_models_get_their_rates_and_the_database_model_they_were_priced_as() {
        let mini = price(ProviderKind::Openai, "gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.model, "openai/gpt-4o-mini");
        assert!((mini.input - 0.15).abs() < 1e-9, "{mini:?}");
        assert!((mini.output - 0.60).abs() < 1e-9, "{mini:?}");
        assert!((mini.cached_input - 0.075).abs() < 1e-9, "{mini:?}");
        assert!(mini.tiers.is_empty());

        let sonnet = price(
            ProviderKind::Bedrock,
            "anthropic.claude-sonnet-4-20250514-v1:0",
        )
        .unwrap();
        assert!((sonnet.input - 3.0).abs() < 1e-9, "{sonnet:?}");
        assert!((sonnet.output - 15.0).abs() < 1e-9, "{sonnet:?}");
        let gemini = price(ProviderKind::Gemini, "models/gemini-2.5-pro").unwrap();
        assert_eq!(gemini.model, "google/gemini-2.5-pro");
        assert!(price(ProviderKind::Vertex, "claude-sonnet-4@20250514").is_some());
        assert!(price(ProviderKind::Mistral, "mistral-large-latest").is_some());
        assert!(price(ProviderKind::Deepseek, "deepseek-chat").is_some());
        assert!(price(ProviderKind::Cohere, "command-r-plus").is_some());
    }

    #[test]
    fn a_tiered_model_has_its_threshold_and_the_rates_above_it() {
        let gemini = price(ProviderKind::Gemini, "gemini-2.5-pro").unwrap();
        assert!((gemini.input - 1.25).abs() < 1e-9, "{gemini:?}");
        let tier = gemini.tiers.first().expect("gemini-2.5-pro is tiered");
        assert_eq!(tier.above_input_tokens, 200_000);
        assert!((tier.input - 2.5).abs() < 1e-9, "{tier:?}");
        assert!(tier.output > gemini.output, "{tier:?}");
    }

    #[test]
    fn unknown_models_self_hosted_servers_and_the_mock_have_no_list_price() {
        assert!(price(ProviderKind::Openai, "mock-chat-1").is_none());
        assert!(price(ProviderKind::Mock, "gpt-4o").is_none());
        assert!(price(ProviderKind::OpenaiCompatible, "gpt-4o").is_none());
        let local = lookup(
            ProviderKind::OpenaiCompatible,
            "gpt-4o",
            Some("http://127.0.0.1:8000/v1"),
            now(),
        );
        assert!(local.is_none());
        let groq = lookup(
            ProviderKind::OpenaiCompatible,
            "llama-3.3-70b-versatile",
            Some("https://api.groq.com/openai/v1"),
            now(),
        );
        assert!(groq.is_some_and(|p| p.price.model.starts_with("groq/")));
    }
}
