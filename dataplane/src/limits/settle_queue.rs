//! Settlements the store could not take when they were made (Redis restarting, a network
//! blip): kept in a bounded queue and retried, oldest first, with capped exponential backoff
//! until the store takes them. A settle is idempotent by request id, so one that did reach the
//! store before its answer was lost is not counted twice. The retry task sleeps while the queue
//! is empty: an idle data plane wakes for nothing.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use super::store::{Settlement, Store};
use crate::{sync::lock, telemetry::Metrics};

/// Settlements kept at most; past this the oldest is dropped (and logged).
pub const CAPACITY: usize = 10_000;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct SettleQueue {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    capacity: usize,
    pending: Mutex<VecDeque<Settlement>>,
    wake: Notify,
    worker: AtomicBool,
}

impl SettleQueue {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            store,
            metrics,
            capacity,
            pending: Mutex::default(),
            wake: Notify::new(),
            worker: AtomicBool::new(false),
        })
    }

    /// Keeps `settlement` for a retry, starting the retry task on first use.
    pub fn push(self: &Arc<Self>, settlement: Settlement) {
        let dropped = {
            let mut pending = lock(&self.pending);
            pending.push_back(settlement);
            let dropped = (pending.len() > self.capacity).then(|| pending.pop_front());
            self.metrics.settles_pending(pending.len());
            dropped.flatten()
        };
        if let Some(lost) = dropped {
            self.metrics.settle_dropped();
            tracing::error!(
                request_id = %lost.id,
                budgets = lost.budgets.len(),
                "unsettled spend dropped: the retry queue is full"
            );
        }
        if !self.worker.swap(true, Ordering::AcqRel)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(self.clone().retry());
        }
        self.wake.notify_one();
    }

    /// Settlements waiting for the store.
    pub fn len(&self) -> usize {
        lock(&self.pending).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn retry(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let next = lock(&self.pending).front().cloned();
            let Some(settlement) = next else {
                self.wake.notified().await;
                continue;
            };
            match self.store.settle(&settlement).await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    let mut pending = lock(&self.pending);
                    if pending.front().is_some_and(|s| s.id == settlement.id) {
                        pending.pop_front();
                    }
                    self.metrics.settles_pending(pending.len());
                    tracing::info!(request_id = %settlement.id, "a queued settle reached the store");
                }
                Err(error) => {
                    tracing::debug!(%error, waiting = ?backoff, "the store still refuses settles");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::future::BoxFuture;

    use super::*;
    use crate::limits::{
        MemoryStore,
        store::{Admission, BudgetState, StoreError, Verdict},
    };

    /// A store whose first `failures` settles apply and then fail, as when the answer is lost.
    struct LosesAnswers {
        inner: Arc<MemoryStore>,
        failures: Mutex<u32>,
    }

    impl Store for LosesAnswers {
        fn admit<'a>(&'a self, a: &'a Admission) -> BoxFuture<'a, Result<Verdict, StoreError>> {
            self.inner.admit(a)
        }
        fn settle<'a>(&'a self, s: &'a Settlement) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async move {
                self.inner.settle(s).await?;
                let mut failures = lock(&self.failures);
                if *failures > 0 {
                    *failures -= 1;
                    return Err(StoreError("timed out".to_owned()));
                }
                Ok(())
            })
        }
        fn budget<'a>(&'a self, c: &'a str) -> BoxFuture<'a, Result<BudgetState, StoreError>> {
            self.inner.budget(c)
        }
        fn rate<'a>(&'a self, c: &'a str) -> BoxFuture<'a, Result<i64, StoreError>> {
            self.inner.rate(c)
        }
    }

    fn settlement(id: &str, cost: i64) -> Settlement {
        Settlement {
            id: id.to_owned(),
            now_ms: 0,
            budgets: vec![("budget".to_owned(), cost)],
            rates: Vec::new(),
            meters: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_settle_whose_answer_was_lost_lands_once_and_the_queue_empties() {
        let memory = MemoryStore::open(None).unwrap();
        let store = Arc::new(LosesAnswers {
            inner: memory.clone(),
            failures: Mutex::new(3),
        });
        let queue = SettleQueue::new(store, Arc::new(Metrics::new()), CAPACITY);
        queue.push(settlement("req-1", 700));
        while !queue.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(memory.budget("budget").await.unwrap().spent, 700);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_the_oldest_is_dropped_and_counted() {
        struct Down;
        impl Store for Down {
            fn admit<'a>(&'a self, _: &'a Admission) -> BoxFuture<'a, Result<Verdict, StoreError>> {
                Box::pin(async { Err(StoreError("down".to_owned())) })
            }
            fn settle<'a>(&'a self, _: &'a Settlement) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(async { Err(StoreError("down".to_owned())) })
            }
            fn budget<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<BudgetState, StoreError>> {
                Box::pin(async { Err(StoreError("down".to_owned())) })
            }
            fn rate<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<i64, StoreError>> {
                Box::pin(async { Err(StoreError("down".to_owned())) })
            }
        }
        let metrics = Arc::new(Metrics::new());
        let queue = SettleQueue::new(Arc::new(Down), metrics.clone(), 2);
        for id in ["a", "b", "c"] {
            queue.push(settlement(id, 1));
        }
        assert_eq!(queue.len(), 2);
        assert!(
            metrics
                .encode()
                .contains("modelgate_limit_settles_dropped_total 1"),
            "{}",
            metrics.encode()
        );
    }
}
