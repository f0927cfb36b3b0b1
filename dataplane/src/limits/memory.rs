//! The in-process store: right for one replica. Spend survives a restart through a snapshot file
//! (settled spend only; reservations and rate windows are short-lived by nature), written
//! atomically in the background when something changed and once more on shutdown.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::store::{
    Admission, BudgetState, SETTLED_MEMORY_MS, Settlement, Store, StoreError, Verdict,
};
use crate::sync::lock;

#[derive(Default)]
struct Budget {
    spent: i64,
    /// The sum of the live reservations, kept as they come and go.
    reserved: i64,
    /// Reservation id -> amount.
    reservations: HashMap<String, i64>,
    /// (expires at ms, reservation id), oldest first: reservations share one TTL, so expiry
    /// order is arrival order and reaping pops from the front.
    expiries: VecDeque<(i64, String)>,
    expire_at_ms: i64,
}

impl Budget {
    fn reap(&mut self, now_ms: i64) {
        while self.expiries.front().is_some_and(|(at, _)| *at <= now_ms) {
            if let Some((_, id)) = self.expiries.pop_front() {
                self.release(&id);
            }
        }
    }

    fn reserve(&mut self, id: &str, amount: i64, expires_ms: i64) {
        self.release(id);
        self.reservations.insert(id.to_owned(), amount);
        self.reserved += amount;
        self.expiries.push_back((expires_ms, id.to_owned()));
    }

    fn release(&mut self, id: &str) {
        if let Some(amount) = self.reservations.remove(id) {
            self.reserved -= amount;
        }
    }
}

/// Keys that expire, oldest first, so pruning costs only what has expired.
#[derive(Default)]
struct Expiring {
    order: VecDeque<(i64, String)>,
}

impl Expiring {
    fn push(&mut self, at_ms: i64, key: &str) {
        self.order.push_back((at_ms, key.to_owned()));
    }

    /// Takes every key due by `now_ms`.
    fn take_due(&mut self, now_ms: i64) -> Vec<String> {
        let mut due = Vec::new();
        while self.order.front().is_some_and(|(at, _)| *at <= now_ms) {
            if let Some((_, key)) = self.order.pop_front() {
                due.push(key);
            }
        }
        due
    }
}

#[derive(Default)]
struct State {
    budgets: HashMap<String, Budget>,
    /// Counter -> (value, expires at ms).
    rates: HashMap<String, (i64, i64)>,
    rate_expiries: Expiring,
    /// Settled request ids, remembered for a day so a repeated settle stays a no-op.
    settled: HashSet<String>,
    settled_expiries: Expiring,
    budgets_pruned_at: i64,
}

impl State {
    fn prune(&mut self, now_ms: i64) {
        for counter in self.rate_expiries.take_due(now_ms) {
            if self
                .rates
                .get(&counter)
                .is_some_and(|(_, at)| *at <= now_ms)
            {
                self.rates.remove(&counter);
            }
        }
        for id in self.settled_expiries.take_due(now_ms) {
            self.settled.remove(&id);
        }
        // Budgets of past periods are few; a scan a minute is plenty.
        if now_ms - self.budgets_pruned_at >= 60_000 {
            self.budgets_pruned_at = now_ms;
            self.budgets
                .retain(|_, b| b.expire_at_ms == 0 || b.expire_at_ms > now_ms);
        }
    }
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    dirty: AtomicBool,
    snapshot: Option<PathBuf>,
}

/// What the snapshot file holds: settled spend per budget counter.
#[derive(Default, Serialize, Deserialize)]
struct Snapshot {
    budgets: HashMap<String, SnapshotBudget>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBudget {
    spent: i64,
    expire_at_ms: i64,
}

impl MemoryStore {
    /// A store whose spend is loaded from, and saved to, `snapshot` when given. A missing file
    /// is an empty store; an unreadable one is an error, so spend is never silently reset.
    pub fn open(snapshot: Option<&Path>) -> Result<Arc<Self>, StoreError> {
        let mut state = State::default();
        if let Some(path) = snapshot {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let saved: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
                        StoreError(format!("spend snapshot {} is corrupt: {e}", path.display()))
                    })?;
                    for (counter, budget) in saved.budgets {
                        state.budgets.insert(
                            counter,
                            Budget {
                                spent: budget.spent,
                                expire_at_ms: budget.expire_at_ms,
                                ..Budget::default()
                            },
                        );
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError(format!(
                        "cannot read spend snapshot {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            dirty: AtomicBool::new(false),
            snapshot: snapshot.map(Path::to_owned),
        }))
    }

    /// Writes the snapshot every `interval` while something changed. Runs until the store is
    /// dropped by everyone else.
    pub fn spawn_snapshots(self: &Arc<Self>, interval: Duration) {
        if self.snapshot.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(store) = weak.upgrade() else { return };
                if let Err(error) = store.save_if_dirty() {
                    tracing::warn!(%error, "cannot write the spend snapshot");
                }
            }
        });
    }

    /// Writes the snapshot now if anything changed since the last write (temp file + rename).
    pub fn save_if_dirty(&self) -> Result<(), StoreError> {
        let Some(path) = &self.snapshot else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = {
            let state = lock(&self.state);
            Snapshot {
                budgets: state
                    .budgets
                    .iter()
                    .map(|(counter, b)| {
                        (
                            counter.clone(),
                            SnapshotBudget {
                                spent: b.spent,
                                expire_at_ms: b.expire_at_ms,
                            },
                        )
                    })
                    .collect(),
            }
        };
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
            let temp = path.with_extension("tmp");
            std::fs::write(&temp, bytes)?;
            std::fs::rename(&temp, path)
        };
        write().map_err(|e| {
            self.dirty.store(true, Ordering::Release);
            StoreError(format!("spend snapshot {}: {e}", path.display()))
        })
    }

    fn admit_now(&self, a: &Admission) -> Verdict {
        let mut state = lock(&self.state);
        state.prune(a.now_ms);
        for (i, charge) in a.budgets.iter().enumerate() {
            let budget = state.budgets.entry(charge.counter.clone()).or_default();
            budget.reap(a.now_ms);
            if budget.spent + budget.reserved + charge.amount > charge.limit {
                return Verdict::OverBudget(i);
            }
        }
        for (i, charge) in a.rates.iter().enumerate() {
            let used = state.rates.get(&charge.counter).map_or(0, |(v, _)| *v);
            if used + charge.amount > charge.limit {
                return Verdict::OverRate(i);
            }
        }
        for charge in &a.budgets {
            let budget = state.budgets.entry(charge.counter.clone()).or_default();
            budget.reserve(&a.id, charge.amount, a.now_ms + a.reservation_ttl_ms);
            budget.expire_at_ms = charge.expire_at_ms;
        }
        for charge in &a.rates {
            match state.rates.get_mut(&charge.counter) {
                Some(entry) => entry.0 += charge.amount,
                None => {
                    state
                        .rates
                        .insert(charge.counter.clone(), (charge.amount, charge.expire_at_ms));
                    state
                        .rate_expiries
                        .push(charge.expire_at_ms, &charge.counter);
                }
            }
        }
        Verdict::Admitted
    }

    fn settle_now(&self, s: &Settlement) {
        let mut state = lock(&self.state);
        if !state.settled.insert(s.id.clone()) {
            return;
        }
        state
            .settled_expiries
            .push(s.now_ms + SETTLED_MEMORY_MS, &s.id);
        for (counter, cost) in &s.budgets {
            let budget = state.budgets.entry(counter.clone()).or_default();
            budget.release(&s.id);
            budget.spent += cost;
        }
        for (counter, delta) in &s.rates {
            if let Some(entry) = state.rates.get_mut(counter) {
                entry.0 += delta;
            }
        }
        for meter in &s.meters {
            state
                .budgets
                .entry(meter.counter.clone())
                .or_default()
                .spent += meter.cost;
        }
        self.dirty.store(true, Ordering::Release);
    }
}

impl Store for MemoryStore {
    fn admit<'a>(&'a self, admission: &'a Admission) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        Box::pin(async move { Ok(self.admit_now(admission)) })
    }

    fn settle<'a>(&'a self, settlement: &'a Settlement) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.settle_now(settlement);
            Ok(())
        })
    }

    fn budget<'a>(&'a self, counter: &'a str) -> BoxFuture<'a, Result<BudgetState, StoreError>> {
        Box::pin(async move {
            let state = lock(&self.state);
            Ok(state
                .budgets
                .get(counter)
                .map_or_else(BudgetState::default, |b| BudgetState {
                    spent: b.spent,
                    reserved: b.reserved,
                }))
        })
    }

    fn rate<'a>(&'a self, counter: &'a str) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move { Ok(lock(&self.state).rates.get(counter).map_or(0, |(v, _)| *v)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::store::{BudgetCharge, RateCharge};

    fn admission(id: &str, now_ms: i64, amount: i64) -> Admission {
        Admission {
            id: id.to_owned(),
            now_ms,
            reservation_ttl_ms: 1_000,
            budgets: vec![BudgetCharge {
                counter: "mg:budget".to_owned(),
                limit: 100,
                amount,
                expire_at_ms: 0,
            }],
            rates: vec![RateCharge {
                counter: "mg:rpm".to_owned(),
                limit: 3,
                amount: 1,
                expire_at_ms: now_ms + 60_000,
            }],
        }
    }

    fn settlement(id: &str, cost: i64) -> Settlement {
        Settlement {
            id: id.to_owned(),
            now_ms: 0,
            budgets: vec![("mg:budget".to_owned(), cost)],
            rates: Vec::new(),
            meters: Vec::new(),
        }
    }

    #[tokio::test]
    async fn reservations_count_until_settled_and_a_refusal_applies_nothing() {
        let store = MemoryStore::open(None).unwrap();
        assert_eq!(
            store.admit(&admission("a", 0, 60)).await.unwrap(),
            Verdict::Admitted
        );
        // 60 reserved: 50 more does not fit, and neither the budget nor the rate moved.
        assert_eq!(
            store.admit(&admission("b", 0, 50)).await.unwrap(),
            Verdict::OverBudget(0)
        );
        assert_eq!(store.rate("mg:rpm").await.unwrap(), 1);
        store.settle(&settlement("a", 10)).await.unwrap();
        let state = store.budget("mg:budget").await.unwrap();
        assert_eq!(
            state,
            BudgetState {
                spent: 10,
                reserved: 0
            }
        );
        assert_eq!(
            store.admit(&admission("b", 0, 50)).await.unwrap(),
            Verdict::Admitted
        );
        assert_eq!(
            store.admit(&admission("c", 0, 1)).await.unwrap(),
            Verdict::Admitted
        );
        // The fourth request of the minute is one over the rate limit of 3.
        assert_eq!(
            store.admit(&admission("d", 0, 1)).await.unwrap(),
            Verdict::OverRate(0)
        );
    }

    #[tokio::test]
    async fn settling_twice_counts_once() {
        let store = MemoryStore::open(None).unwrap();
        store.admit(&admission("a", 0, 60)).await.unwrap();
        store.settle(&settlement("a", 10)).await.unwrap();
        store.settle(&settlement("a", 10)).await.unwrap();
        assert_eq!(store.budget("mg:budget").await.unwrap().spent, 10);
    }

    #[tokio::test]
    async fn an_unsettled_reservation_expires() {
        let store = MemoryStore::open(None).unwrap();
        store.admit(&admission("a", 0, 90)).await.unwrap();
        assert_eq!(
            store.admit(&admission("b", 999, 20)).await.unwrap(),
            Verdict::OverBudget(0)
        );
        // Past the reservation's TTL, its 90 no longer count.
        assert_eq!(
            store.admit(&admission("b", 1_000, 20)).await.unwrap(),
            Verdict::Admitted
        );
        assert_eq!(store.budget("mg:budget").await.unwrap().reserved, 20);
    }

    #[tokio::test]
    async fn settled_spend_survives_a_restart_through_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.json");
        let store = MemoryStore::open(Some(&path)).unwrap();
        store.admit(&admission("a", 0, 60)).await.unwrap();
        store.settle(&settlement("a", 42)).await.unwrap();
        store.save_if_dirty().unwrap();
        drop(store);
        let reopened = MemoryStore::open(Some(&path)).unwrap();
        assert_eq!(reopened.budget("mg:budget").await.unwrap().spent, 42);
        std::fs::write(&path, b"not json").unwrap();
        assert!(
            MemoryStore::open(Some(&path)).is_err(),
            "a corrupt snapshot must not reset spend"
        );
    }

    /// One step of a budget's life: admit a call reserving its worst case, or settle an
    /// admitted one (possibly twice) at a real cost no larger than what it reserved.
    #[derive(Clone, Debug)]
    enum Step {
        Admit {
            amount: i64,
        },
        Settle {
            nth: usize,
            cost_share: u8,
            repeat: bool,
        },
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![
                (1i64..60).prop_map(|amount| Step::Admit { amount }),
                (0usize..64, 0u8..=100, any::<bool>()).prop_map(|(nth, cost_share, repeat)| {
                    Step::Settle {
                        nth,
                        cost_share,
                        repeat,
                    }
                }),
            ],
            1..80,
        )
    }

    proptest::proptest! {
        /// No interleaving of admits and settles spends past the limit: a settle costs at most
        /// what its call reserved, a repeated settle counts once, and the reservations always
        /// add up to what is still open.
        #[test]
        fn no_interleaving_overspends(steps in steps()) {
            let store = MemoryStore::open(None).unwrap();
            let mut admitted: Vec<(String, i64)> = Vec::new();
            let mut settled = std::collections::HashSet::new();
            let limit = 100;
            for step in steps {
                match step {
                    Step::Admit { amount } => {
                        let id = format!("call-{}", admitted.len() + settled.len() + 1000);
                        let mut admission = admission(&id, 0, amount);
                        admission.budgets[0].limit = limit;
                        admission.rates.clear();
                        if store.admit_now(&admission) == Verdict::Admitted {
                            admitted.push((id, amount));
                        }
                    }
                    Step::Settle { nth, cost_share, repeat } => {
                        if admitted.is_empty() {
                            continue;
                        }
                        let (id, amount) = admitted[nth % admitted.len()].clone();
                        let cost = amount * i64::from(cost_share) / 100;
                        for _ in 0..if repeat { 2 } else { 1 } {
                            store.settle_now(&settlement(&id, cost));
                        }
                        settled.insert(id);
                    }
                }
                let state = lock(&store.state);
                let budget = state.budgets.get("mg:budget");
                let (spent, reserved) = budget.map_or((0, 0), |b| (b.spent, b.reserved));
                proptest::prop_assert!(spent <= limit, "spent {spent} over {limit}");
                proptest::prop_assert!(spent + reserved <= limit, "{spent} + {reserved} over {limit}");
                let open: i64 = admitted
                    .iter()
                    .filter(|(id, _)| !settled.contains(id))
                    .map(|(_, amount)| amount)
                    .sum();
                proptest::prop_assert_eq!(reserved, open);
            }
        }
    }
}
