//! The request path's side of spend control: what a call may cost before it is made (the
//! worst case over every deployment its plan may reach), the refusal a client sees when a limit
//! has no room, and the settlement with the real cost afterwards.

use std::{sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, header};
use modelgate_crds::common::BudgetPeriod;

use crate::{
    cache::{Cache, CacheKey},
    config::Snapshot,
    error::ApiError,
    limits::{
        Demand, Refusal, Ticket,
        cost::{Price, usd},
    },
    provider::{Endpoint, Usage},
    route::Plan,
    telemetry::{DecisionRecord, Metrics},
};

/// Output tokens assumed for the worst case when neither the request nor the group sets any.
const DEFAULT_WORST_CASE_OUTPUT: u64 = 4_096;
/// A requested `max_tokens` above this is reserved as this (no model writes more in one call).
const MAX_WORST_CASE_OUTPUT: u64 = 131_072;

/// The worst case of one call: its prompt estimate and its output bound, at the highest price
/// of any deployment the plan may reach (fallbacks included).
pub fn demand(
    snapshot: &Snapshot,
    plan: &Plan,
    endpoint: Endpoint,
    prompt_tokens: u64,
    max_tokens: Option<u64>,
) -> Demand {
    let output = match endpoint {
        Endpoint::Embeddings => 0,
        _ => max_tokens
            .or_else(|| {
                plan.attempts.first().and_then(|a| {
                    snapshot
                        .group(a.group)
                        .spec
                        .default_max_tokens
                        .map(u64::from)
                })
            })
            .unwrap_or(DEFAULT_WORST_CASE_OUTPUT)
            .min(MAX_WORST_CASE_OUTPUT),
    };
    let worst_case_nanos = plan
        .attempts
        .iter()
        .filter_map(|a| snapshot.group(a.group).deployments[a.deployment].hot.price)
        .map(|price| price.worst_case_nanos(prompt_tokens, output))
        .max()
        .unwrap_or(0);
    Demand {
        worst_case_nanos,
        // TPM counts what is known before the call: the prompt and an explicit output bound.
        // The real count replaces it at settle.
        tokens: prompt_tokens + max_tokens.unwrap_or(0).min(MAX_WORST_CASE_OUTPUT),
        rates_only: false,
    }
}

/// A refusal as the client sees it: 402, 429 or 503, each with Retry-After when there is one.
pub fn refused(refusal: &Refusal) -> (ApiError, Vec<(HeaderName, HeaderValue)>) {
    let (error, retry_after, limit) = match refusal {
        Refusal::Budget {
            scope,
            limit_usd,
            period,
            retry_after,
        } => (
            ApiError::budget_exceeded(scope, *limit_usd, period_name(*period)),
            *retry_after,
            format!("{scope}-budget"),
        ),
        Refusal::Rate {
            scope,
            kind,
            limit,
            retry_after,
        } => {
            let error = ApiError::rate_limited(scope, *kind, *limit);
            let unit = if error.code == "rpm_limit_exceeded" {
                "rpm"
            } else {
                "tpm"
            };
            (error, Some(*retry_after), format!("{scope}-{unit}"))
        }
        Refusal::Unavailable => (ApiError::limits_unavailable(), Some(1), String::new()),
    };
    let mut headers = Vec::new();
    if let Some(seconds) = retry_after {
        headers.push((header::RETRY_AFTER, HeaderValue::from(seconds)));
    }
    if let Ok(value) = HeaderValue::from_str(&limit)
        && !limit.is_empty()
    {
        headers.push((HeaderName::from_static("x-modelgate-limit"), value));
    }
    (error, headers)
}

fn period_name(period: BudgetPeriod) -> &'static str {
    match period {
        BudgetPeriod::Daily => "daily",
        BudgetPeriod::Weekly => "weekly",
        BudgetPeriod::Monthly => "monthly",
        BudgetPeriod::Total => "total",
    }
}

/// What a stream needs to settle its call when it ends.
pub struct StreamBilling {
    pub charge: Charge,
    /// The serving deployment's price.
    pub price: Option<Price>,
    /// The serving group's name (the spend metric's `model`).
    pub group: String,
    /// Whether the client asked for the usage chunk (the gateway always asks upstream).
    pub client_wants_usage: bool,
    /// Where to store the stream once it completes, when the cache applies.
    pub cache: Option<(Arc<Cache>, CacheKey, Duration)>,
}

/// An admitted call's ticket with what is needed to cost it once it is served.
pub struct Charge {
    pub ticket: Ticket,
    pub org: String,
    pub team: Option<String>,
}

impl Charge {
    /// Costs the call (the serving deployment's price times the reported usage), records the
    /// cost, and returns it in nano-dollars with the ticket to settle at that cost. Without
    /// usage the cost is unknown: the reservation is released and there is nothing to settle.
    pub fn cost(
        self,
        price: Option<Price>,
        usage: Option<Usage>,
        group: &str,
        record: &mut DecisionRecord,
        metrics: &Metrics,
    ) -> Option<Settle> {
        let usage = usage?;
        let cost = price.map_or(0, |p| p.cost_nanos(&usage));
        record.cost_usd = Some(usd(cost));
        record.price_source = price.map(|p| p.source.as_str());
        metrics.spend(&self.org, self.team.as_deref(), group, usd(cost));
        Some(Settle {
            ticket: self.ticket,
            cost,
            tokens: usage.total_tokens,
        })
    }
}

/// A costed call, ready to settle.
pub struct Settle {
    ticket: Ticket,
    pub cost: i64,
    tokens: u64,
}

impl Settle {
    pub async fn now(self) {
        self.ticket.settle(self.cost, self.tokens).await;
    }

    pub fn in_background(self) {
        self.ticket.settle_in_background(self.cost, self.tokens);
    }
}
