//! Spend control before any provider is called: the worst case is reserved against every
//! budget that applies and the call counted against every rate limit, or it is refused here
//! with 402, 429 or 503. A key without limits skips all of it.

use http::{HeaderName, HeaderValue, header};
use modelgate_crds::common::BudgetPeriod;

use super::Services;
use crate::{
    catalog::usd,
    config::{KeyEntry, Snapshot},
    decision::DecisionRecord,
    error::{ApiError, RateKind},
    finish::Refused,
    limits::{Demand, Refusal, Ticket},
    request::{Endpoint, Parsed},
    route::Plan,
};

/// Output tokens assumed for the worst case when neither the request nor the group sets any.
const DEFAULT_WORST_CASE_OUTPUT: u64 = 4_096;
/// A requested `max_tokens` above this is reserved as this (no model writes more in one call).
const MAX_WORST_CASE_OUTPUT: u64 = 131_072;

/// Reserves the call's worst case against the caller's limits.
pub(super) async fn admit(
    services: &Services,
    snapshot: &Snapshot,
    key: &KeyEntry,
    plan: &Plan,
    request: &Parsed,
    record: &mut DecisionRecord,
) -> Result<Ticket, Refused> {
    if key.limits.is_empty() {
        return Ok(Ticket::unlimited());
    }
    let demand = demand(snapshot, plan, request);
    record.reserved_usd = Some(usd(demand.worst_case_nanos));
    Ok(services
        .limiter
        .admit(&key.limits, &record.request_id, demand)
        .await?)
}

/// A cache hit costs nothing, but by default it still counts against the caller's RPM.
pub(super) async fn admit_hit(
    services: &Services,
    key: &KeyEntry,
    record: &DecisionRecord,
) -> Result<(), Refused> {
    let demand = Demand {
        rates_only: true,
        ..Demand::default()
    };
    let ticket = services
        .limiter
        .admit(&key.limits, &record.request_id, demand)
        .await?;
    ticket.settle(0, 0).await;
    Ok(())
}

/// The worst case of one call: its prompt estimate and its output bound, at the highest price
/// of any deployment the plan may reach (fallbacks included).
fn demand(snapshot: &Snapshot, plan: &Plan, request: &Parsed) -> Demand {
    let output = match request.endpoint {
        Endpoint::Embeddings => 0,
        _ => request
            .max_tokens
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
        .every_link()
        .filter_map(|a| snapshot.group(a.group).deployments[a.deployment].hot.price)
        .map(|price| price.worst_case_nanos(request.prompt_tokens, output))
        .max()
        .unwrap_or(0);
    Demand {
        worst_case_nanos,
        // TPM counts what is known before the call: the prompt and an explicit output bound.
        // The real count replaces it at settle.
        tokens: request.prompt_tokens + request.max_tokens.unwrap_or(0).min(MAX_WORST_CASE_OUTPUT),
        rates_only: false,
    }
}

/// A refusal as the client sees it: 402, 429 or 503, each with Retry-After when there is one.
impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        let (error, retry_after, limit) = match &refusal {
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
                let unit = match kind {
                    RateKind::Requests => "rpm",
                    RateKind::Tokens => "tpm",
                };
                (
                    ApiError::rate_limited(scope, *kind, *limit),
                    Some(*retry_after),
                    format!("{scope}-{unit}"),
                )
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
        Self { error, headers }
    }
}

fn period_name(period: BudgetPeriod) -> &'static str {
    match period {
        BudgetPeriod::Daily => "daily",
        BudgetPeriod::Weekly => "weekly",
        BudgetPeriod::Monthly => "monthly",
        BudgetPeriod::Total => "total",
    }
}
