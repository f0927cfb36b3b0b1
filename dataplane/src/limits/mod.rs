//! Spend control: per-call cost, budgets (reserve-then-settle) and RPM/TPM limits for a key, its
//! team and its org, enforced in the one request pipeline every endpoint goes through.
//!
//! Before a call, [`Limiter::admit`] reserves the worst-case cost against every budget that
//! applies and counts the request and its estimated tokens against every rate limit, in one
//! atomic store operation; if any would be exceeded, nothing is applied and the caller gets 402
//! or 429. The returned [`Ticket`] settles to the real cost after the call, or releases the
//! reservation when the call fails, the client goes away, or the request is dropped.

mod memory;
mod redis;
mod settle_queue;
pub mod store;

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use modelgate_crds::{
    common::{Budget, BudgetPeriod},
    spend::{BudgetWindow, Meter, counter_key},
};

pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use settle_queue::SettleQueue;
pub use store::{Store, StoreError};

use crate::{catalog::NANOS_PER_USD, config::KeyLimits, error::RateKind, telemetry::Metrics};
use store::{Admission, BudgetCharge, MeterCharge, RateCharge, Settlement, Verdict};

/// What to do when the store cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse with 503 and Retry-After (never 401 or 402).
    Closed,
    /// Serve without limits, counting and logging every such request.
    Open,
}

/// What one call may cost and consume, estimated before it is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct Demand {
    /// The worst-case cost in nano-dollars.
    pub worst_case_nanos: i64,
    /// Tokens counted against TPM limits now (corrected to the real count at settle).
    pub tokens: u64,
    /// Counts the request against rate limits only: a cache hit, which costs nothing.
    pub rates_only: bool,
}

/// Why a call was refused before reaching a provider.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    Budget {
        scope: &'static str,
        limit_usd: f64,
        period: BudgetPeriod,
        /// Seconds until the budget resets; `None` for a `total` budget.
        retry_after: Option<u64>,
    },
    Rate {
        scope: &'static str,
        kind: RateKind,
        limit: u64,
        retry_after: u64,
    },
    /// The store is unreachable and the fail mode is closed.
    Unavailable,
}

pub struct Limiter {
    store: Arc<dyn Store>,
    fail_mode: FailMode,
    reservation_ttl: Duration,
    metrics: Arc<Metrics>,
    /// Settlements the store could not take yet.
    unsettled: Arc<SettleQueue>,
}

impl Limiter {
    pub fn new(
        store: Arc<dyn Store>,
        fail_mode: FailMode,
        reservation_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            unsettled: SettleQueue::new(store.clone(), metrics.clone(), settle_queue::CAPACITY),
            store,
            fail_mode,
            reservation_ttl,
            metrics,
        }
    }

    /// Settlements waiting for the store to come back.
    pub fn unsettled(&self) -> usize {
        self.unsettled.len()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reserves `demand` against every limit in `limits`, atomically.
    pub async fn admit(
        &self,
        limits: &KeyLimits,
        request_id: &str,
        demand: Demand,
    ) -> Result<Ticket, Refusal> {
        let meters = if demand.rates_only {
            Vec::new()
        } else {
            spend_meters(limits)
        };
        if limits.is_empty() {
            // Nothing to enforce, so nothing to ask the store now: the spend is counted when
            // the call is settled, in the background.
            return Ok(Ticket {
                settle: (!meters.is_empty()).then(|| self.pending(request_id, meters)),
            });
        }
        let charges = Charges::new(limits, request_id, demand, self.reservation_ttl);
        let verdict = match self.store.admit(&charges.admission).await {
            Ok(verdict) => verdict,
            Err(error) => {
                self.metrics.limit_store_error("admit");
                return match self.fail_mode {
                    FailMode::Closed => {
                        tracing::warn!(%error, "limit store unreachable; refusing (fail mode closed)");
                        Err(Refusal::Unavailable)
                    }
                    FailMode::Open => {
                        tracing::warn!(%error, "limit store unreachable; serving unlimited (fail mode open)");
                        Ok(Ticket::unlimited())
                    }
                };
            }
        };
        match verdict {
            Verdict::Admitted => Ok(Ticket {
                settle: Some(Pending {
                    budgets: charges
                        .admission
                        .budgets
                        .into_iter()
                        .map(|b| b.counter)
                        .collect(),
                    tokens: charges
                        .tokens
                        .into_iter()
                        .map(|c| (c, saturating_i64(demand.tokens)))
                        .collect(),
                    ..self.pending(request_id, meters)
                }),
            }),
            Verdict::OverBudget(i) => Err(charges.over_budget(i, &self.metrics)),
            Verdict::OverRate(i) => Err(charges.over_rate(i, &self.metrics)),
        }
    }
}

impl Limiter {
    /// A pending settle with only spend meters (budgets and rate counters are added by admit).
    fn pending(&self, request_id: &str, meters: Vec<(String, i64)>) -> Pending {
        Pending {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            unsettled: self.unsettled.clone(),
            id: request_id.to_owned(),
            budgets: Vec::new(),
            tokens: Vec::new(),
            meters,
        }
    }
}

/// (spend counter, expiry in Unix ms) of every scope of the key without a budget: its spend in
/// the current calendar month, kept a week past the month's end like a budget's.
fn spend_meters(limits: &KeyLimits) -> Vec<(String, i64)> {
    let window = BudgetWindow::containing(BudgetPeriod::Monthly, Timestamp::now());
    let expire_at_ms = window.resets_at.map_or(0, |at| (at + 7 * 24 * 3600) * 1000);
    limits
        .metered()
        .iter()
        .map(|owner| {
            let counter = counter_key(owner.subject(), Meter::Budget { period: &window.id });
            (counter, expire_at_ms)
        })
        .collect()
}

/// One admission's charges, and which scope and limit each stands for (to name it in a refusal).
struct Charges<'l> {
    admission: Admission,
    now: Timestamp,
    minute_ends_ms: i64,
    budget_of: Vec<(&'static str, &'l Budget, BudgetWindow)>,
    rate_of: Vec<(&'static str, RateKind, u64)>,
    /// The TPM counters charged, to correct at settle.
    tokens: Vec<String>,
}

impl<'l> Charges<'l> {
    fn new(limits: &'l KeyLimits, request_id: &str, demand: Demand, ttl: Duration) -> Self {
        let now = Timestamp::now();
        let minute = now.as_second().div_euclid(60);
        let minute_ends_ms = (minute + 1) * 60_000;
        // A rate counter outlives its minute by one more, for settles of long calls.
        let rate_expiry_ms = minute_ends_ms + 60_000;
        let mut charges = Self {
            admission: Admission {
                id: request_id.to_owned(),
                now_ms: now.as_millisecond(),
                reservation_ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
                budgets: Vec::new(),
                rates: Vec::new(),
            },
            now,
            minute_ends_ms,
            budget_of: Vec::new(),
            rate_of: Vec::new(),
            tokens: Vec::new(),
        };
        for scope in limits.scopes() {
            let subject = scope.owner.subject();
            if let Some(budget) = scope.budget.as_ref().filter(|_| !demand.rates_only) {
                let window = BudgetWindow::containing(budget.period, now);
                charges.admission.budgets.push(BudgetCharge {
                    counter: counter_key(subject, Meter::Budget { period: &window.id }),
                    limit: usd_to_nanos(budget.limit),
                    amount: demand.worst_case_nanos,
                    // Kept a week past the reset, so spend stays readable for a while.
                    expire_at_ms: window.resets_at.map_or(0, |at| (at + 7 * 24 * 3600) * 1000),
                });
                charges.budget_of.push((subject.scope(), budget, window));
            }
            let rates = [
                (scope.rpm, RateKind::Requests, Meter::Requests { minute }, 1),
                (
                    scope.tpm,
                    RateKind::Tokens,
                    Meter::Tokens { minute },
                    demand.tokens,
                ),
            ];
            for (limit, kind, meter, amount) in rates {
                let Some(limit) = limit else { continue };
                let counter = counter_key(subject, meter);
                if kind == RateKind::Tokens {
                    charges.tokens.push(counter.clone());
                }
                charges.admission.rates.push(RateCharge {
                    counter,
                    limit: saturating_i64(limit),
                    amount: saturating_i64(amount),
                    expire_at_ms: rate_expiry_ms,
                });
                charges.rate_of.push((subject.scope(), kind, limit));
            }
        }
        charges
    }

    fn over_budget(&self, index: usize, metrics: &Metrics) -> Refusal {
        let Some((scope, budget, window)) = self.budget_of.get(index) else {
            return Refusal::Unavailable;
        };
        metrics.limit_refused(scope, "budget");
        Refusal::Budget {
            scope,
            limit_usd: budget.limit,
            period: budget.period,
            retry_after: window
                .resets_at
                .map(|at| u64::try_from(at - self.now.as_second()).unwrap_or(1).max(1)),
        }
    }

    fn over_rate(&self, index: usize, metrics: &Metrics) -> Refusal {
        let Some(&(scope, kind, limit)) = self.rate_of.get(index) else {
            return Refusal::Unavailable;
        };
        metrics.limit_refused(
            scope,
            match kind {
                RateKind::Requests => "rpm",
                RateKind::Tokens => "tpm",
            },
        );
        let left_ms = self.minute_ends_ms - self.now.as_millisecond();
        Refusal::Rate {
            scope,
            kind,
            limit,
            retry_after: u64::try_from(left_ms.div_euclid(1000) + 1).unwrap_or(1),
        }
    }
}

/// An admitted call's reservations. Settle it with the real cost; dropped unsettled (a failed
/// call, a client that went away), it releases them.
pub struct Ticket {
    settle: Option<Pending>,
}

struct Pending {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    unsettled: Arc<SettleQueue>,
    id: String,
    budgets: Vec<String>,
    /// (TPM counter, tokens counted at admit).
    tokens: Vec<(String, i64)>,
    /// (spend counter, expiry) of scopes without a budget.
    meters: Vec<(String, i64)>,
}

impl Ticket {
    /// A ticket with nothing reserved: no limit applies, or the store failed open.
    pub fn unlimited() -> Self {
        Self { settle: None }
    }

    /// Replaces the reservations with the real cost and token count. Awaited before a complete
    /// answer goes out, so the caller's next request already sees its spend.
    pub async fn settle(mut self, cost_nanos: i64, tokens: u64) {
        match self.settle.take() {
            // Only counting: no later request depends on it, so the answer does not wait.
            Some(pending) if pending.budgets.is_empty() && pending.tokens.is_empty() => {
                pending.spawn(cost_nanos, Some(tokens));
            }
            Some(pending) => pending.settle(cost_nanos, Some(tokens)).await,
            None => {}
        }
    }

    /// The same, in the background: for a stream, which ends after its last byte went out.
    pub fn settle_in_background(mut self, cost_nanos: i64, tokens: u64) {
        if let Some(pending) = self.settle.take() {
            pending.spawn(cost_nanos, Some(tokens));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(pending) = self.settle.take() {
            pending.spawn(0, None);
        }
    }
}

impl Pending {
    /// `tokens: None` releases: no cost, and the tokens counted at admit are given back.
    async fn settle(self, cost_nanos: i64, tokens: Option<u64>) {
        if cost_nanos == 0 && self.budgets.is_empty() && self.tokens.is_empty() {
            return;
        }
        let settlement = Settlement {
            id: self.id,
            now_ms: Timestamp::now().as_millisecond(),
            budgets: self.budgets.into_iter().map(|c| (c, cost_nanos)).collect(),
            rates: self
                .tokens
                .into_iter()
                .map(|(c, counted)| (c, tokens.map_or(0, saturating_i64) - counted))
                .collect(),
            meters: self
                .meters
                .into_iter()
                .filter(|_| cost_nanos != 0)
                .map(|(counter, expire_at_ms)| MeterCharge {
                    counter,
                    cost: cost_nanos,
                    expire_at_ms,
                })
                .collect(),
        };
        if let Err(error) = self.store.settle(&settlement).await {
            self.metrics.limit_store_error("settle");
            tracing::warn!(%error, request_id = %settlement.id, "settle failed; queued for a retry");
            self.unsettled.push(settlement);
        }
    }

    fn spawn(self, cost_nanos: i64, tokens: Option<u64>) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.settle(cost_nanos, tokens));
        }
    }
}

fn usd_to_nanos(usd: f64) -> i64 {
    let nanos = (usd * NANOS_PER_USD).floor();
    if nanos.is_finite() && nanos > 0.0 {
        nanos.min(i64::MAX as f64) as i64
    } else {
        0
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
