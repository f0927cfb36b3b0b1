//! The work queue: namespaces due for a reconcile. A change marks its namespace due after a short
//! batching window (so a `kubectl apply -f dir/` becomes one compile and one publish); a failed
//! reconcile is retried with per-namespace exponential backoff, reset by the next success.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use tokio::time::Instant;

/// What a watch event asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Something in this namespace changed.
    Namespace(String),
    /// A watch relisted: every namespace may have changed.
    All,
    /// A data plane's heartbeat changed here: worth a reconcile only if what is served changed.
    Heartbeat(String),
}

const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct WorkQueue {
    due: BTreeMap<String, Instant>,
    failures: HashMap<String, u32>,
    window: Duration,
}

impl WorkQueue {
    pub fn new(window: Duration) -> Self {
        Self {
            due: BTreeMap::new(),
            failures: HashMap::new(),
            window,
        }
    }

    /// Marks `namespace` due at the end of the batching window. A namespace already due sooner
    /// keeps its time, so a stream of changes cannot postpone a reconcile indefinitely.
    pub fn add(&mut self, namespace: &str, now: Instant) {
        let at = now + self.window;
        self.due
            .entry(namespace.to_owned())
            .and_modify(|due| *due = (*due).min(at))
            .or_insert(at);
    }

    /// When the next namespace is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Takes every namespace due by `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let ready: Vec<String> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in &ready {
            self.due.remove(ns);
        }
        ready
    }

    /// Schedules a retry after a failure; returns the delay chosen.
    pub fn failed(&mut self, namespace: &str, now: Instant) -> Duration {
        let failures = self.failures.entry(namespace.to_owned()).or_insert(0);
        *failures = failures.saturating_add(1);
        let delay = backoff(*failures);
        let at = now + delay;
        self.due
            .entry(namespace.to_owned())
            .and_modify(|due| *due = (*due).min(at))
            .or_insert(at);
        delay
    }

    pub fn succeeded(&mut self, namespace: &str) {
        self.failures.remove(namespace);
    }
}

/// 500ms, 1s, 2s, ... capped at 5 minutes.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(200);

    #[test]
    fn a_burst_of_changes_becomes_one_reconcile_at_the_end_of_the_first_window() {
        let start = Instant::now();
        let mut queue = WorkQueue::new(WINDOW);
        queue.add("team-a", start);
        queue.add("team-a", start + Duration::from_millis(150));
        assert_eq!(queue.next_due(), Some(start + WINDOW));
        assert!(
            queue
                .take_due(start + Duration::from_millis(199))
                .is_empty()
        );
        assert_eq!(queue.take_due(start + WINDOW), vec!["team-a".to_owned()]);
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn failures_back_off_exponentially_per_namespace_and_reset_on_success() {
        let now = Instant::now();
        let mut queue = WorkQueue::new(WINDOW);
        let delays: Vec<Duration> = (0..4).map(|_| queue.failed("team-a", now)).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000].map(Duration::from_millis).to_vec()
        );
        assert_eq!(queue.failed("team-b", now), Duration::from_millis(500));
        queue.succeeded("team-a");
        assert_eq!(queue.failed("team-a", now), Duration::from_millis(500));
        for _ in 0..40 {
            queue.failed("team-c", now);
        }
        assert_eq!(queue.failed("team-c", now), BACKOFF_MAX);
    }

    #[test]
    fn a_change_during_backoff_brings_the_retry_forward() {
        let now = Instant::now();
        let mut queue = WorkQueue::new(WINDOW);
        for _ in 0..5 {
            queue.take_due(now + Duration::from_secs(3600));
            queue.failed("team-a", now);
        }
        assert_eq!(queue.next_due(), Some(now + Duration::from_secs(8)));
        queue.add("team-a", now);
        assert_eq!(queue.next_due(), Some(now + WINDOW));
    }
}
