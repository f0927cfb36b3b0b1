//! The state store behind budgets and rate limits: one atomic admit and one idempotent settle
//! per request, over counters named by `modelgate_crds::spend::counter_key`.
//!
//! Admit checks every charge against its limit and applies all of them or none. A budget charge
//! is a reservation (the worst-case cost) that expires, so a replica that dies before settling
//! leaks nothing for long. Settle replaces a request's reservations by its real cost and adjusts
//! its token counts, and adds its cost to the spend counters of scopes without a budget; a
//! second settle of the same request does nothing.

use futures_util::future::BoxFuture;

/// A reservation against a budget counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetCharge {
    pub counter: String,
    /// Nano-dollars the period allows.
    pub limit: i64,
    /// Nano-dollars reserved (the worst case).
    pub amount: i64,
    /// Unix milliseconds after which the counter may be dropped (0: never).
    pub expire_at_ms: i64,
}

/// An increment of a per-minute rate counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateCharge {
    pub counter: String,
    pub limit: i64,
    pub amount: i64,
    pub expire_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The request id: names the reservations and makes settlement idempotent.
    pub id: String,
    pub now_ms: i64,
    /// How long the reservations live without a settle.
    pub reservation_ttl_ms: i64,
    pub budgets: Vec<BudgetCharge>,
    pub rates: Vec<RateCharge>,
}

/// The store's answer to an admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// The budget charge at this index would exceed its limit; nothing was applied.
    OverBudget(usize),
    /// The rate charge at this index would exceed its limit; nothing was applied.
    OverRate(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub id: String,
    pub now_ms: i64,
    /// (budget counter, real cost in nano-dollars) for every budget the request reserved.
    pub budgets: Vec<(String, i64)>,
    /// (rate counter, correction) for token counters: real tokens minus the estimate admitted.
    pub rates: Vec<(String, i64)>,
    /// Spend counters of scopes without a budget: nothing was reserved, the cost is added.
    pub meters: Vec<MeterCharge>,
}

/// The cost added to the spend counter of a scope without a budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterCharge {
    pub counter: String,
    /// Nano-dollars.
    pub cost: i64,
    /// Unix milliseconds after which the counter may be dropped.
    pub expire_at_ms: i64,
}

/// A budget counter as stored: settled spend and live reservations, in nano-dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetState {
    pub spent: i64,
    pub reserved: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

impl From<crate::fleet::ConnectionError> for StoreError {
    fn from(error: crate::fleet::ConnectionError) -> Self {
        Self(error.0)
    }
}

pub trait Store: Send + Sync {
    fn admit<'a>(&'a self, admission: &'a Admission) -> BoxFuture<'a, Result<Verdict, StoreError>>;
    fn settle<'a>(&'a self, settlement: &'a Settlement) -> BoxFuture<'a, Result<(), StoreError>>;
    fn budget<'a>(&'a self, counter: &'a str) -> BoxFuture<'a, Result<BudgetState, StoreError>>;
    /// The current value of a rate counter.
    fn rate<'a>(&'a self, counter: &'a str) -> BoxFuture<'a, Result<i64, StoreError>>;
}

/// How long a settled request id is remembered, so a repeated settle stays a no-op.
pub const SETTLED_MEMORY_MS: i64 = 24 * 3600 * 1000;
