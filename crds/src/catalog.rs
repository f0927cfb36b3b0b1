//! Built-in list prices (USD per 1M tokens) for well-known models, used when a deployment declares
//! no `pricing`. A deployment's own `pricing` always wins; a deployment priced from this table is
//! logged when the config loads and marked `"priceSource": "builtin"` in the decision log, so
//! nobody mistakes a list price for a negotiated one.
//!
//! Matched by exact model name, then by the longest listed prefix (dated snapshots such as
//! `gpt-4o-2024-08-06` take their family's price). Prices as published by the providers in 2026.

/// (model or model prefix, input, output, cached input) in USD per 1M tokens.
const TABLE: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4o", 2.50, 10.00, 1.25),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1", 2.00, 8.00, 0.50),
    ("gpt-5-nano", 0.05, 0.40, 0.005),
    ("gpt-5-mini", 0.25, 2.00, 0.025),
    ("gpt-5", 1.25, 10.00, 0.125),
    ("o4-mini", 1.10, 4.40, 0.275),
    ("o3-mini", 1.10, 4.40, 0.55),
    ("o3", 2.00, 8.00, 0.50),
    ("text-embedding-3-small", 0.02, 0.0, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13),
    ("claude-opus-4", 15.00, 75.00, 1.50),
    ("claude-sonnet-4", 3.00, 15.00, 0.30),
    ("claude-3-5-haiku", 0.80, 4.00, 0.08),
    ("claude-haiku-4", 1.00, 5.00, 0.10),
    ("gemini-2.5-pro", 1.25, 10.00, 0.31),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 0.025),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075),
    ("gemini-2.0-flash", 0.10, 0.40, 0.025),
    ("mistral-large", 2.00, 6.00, 2.00),
    ("mistral-small", 0.10, 0.30, 0.10),
    ("deepseek-chat", 0.27, 1.10, 0.07),
    ("deepseek-reasoner", 0.55, 2.19, 0.14),
    ("command-r-plus", 2.50, 10.00, 2.50),
    ("command-r", 0.15, 0.60, 0.15),
];

/// A model's list price in USD per 1M tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ListPrice {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_input: f64,
}

/// The list price of `model`, if the table knows it.
pub fn list_price(model: &str) -> Option<ListPrice> {
    // Provider-qualified names match on their last part: `models/gemini-2.5-pro` (Gemini),
    // `anthropic.claude-sonnet-4-20250514-v1:0` (Bedrock).
    let unpathed = model.rsplit('/').next().unwrap_or(model);
    let unqualified = unpathed.split_once('.').map_or(unpathed, |(_, rest)| rest);
    [model, unpathed, unqualified]
        .into_iter()
        .find_map(lookup)
        .map(|(input, output, cached_input)| ListPrice {
            input,
            output,
            cached_input,
        })
}

fn lookup(name: &str) -> Option<(f64, f64, f64)> {
    TABLE
        .iter()
        .filter(|(m, ..)| {
            name == *m
                || name
                    .strip_prefix(m)
                    .is_some_and(|rest| rest.starts_with('-') || rest.starts_with(':'))
        })
        .max_by_key(|(m, ..)| m.len())
        .map(|&(_, input, output, cached)| (input, output, cached))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_dated_snapshots_and_qualified_names_find_their_family() {
        assert_eq!(list_price("gpt-4o").unwrap().input, 2.50);
        assert_eq!(list_price("gpt-4o-mini").unwrap().input, 0.15);
        assert_eq!(list_price("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(list_price("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(
            list_price("claude-sonnet-4-20250514").unwrap().output,
            15.00
        );
        assert_eq!(list_price("gemini-2.5-flash-lite").unwrap().input, 0.10);
        assert_eq!(list_price("gemini-2.5-flash").unwrap().input, 0.30);
        assert_eq!(list_price("models/gemini-2.5-pro").unwrap().input, 1.25);
        assert!(list_price("Qwen/Qwen2.5-7B-Instruct").is_none());
        assert!(list_price("mock-chat-1").is_none());
        assert!(list_price("gpt-4ox").is_none());
        assert_eq!(list_price("gpt-4.1-mini").unwrap().input, 0.40);
        assert_eq!(list_price("gpt-4.1").unwrap().input, 2.00);
        assert_eq!(
            list_price("anthropic.claude-sonnet-4-20250514-v1:0")
                .unwrap()
                .input,
            3.00
        );
    }
}
