//! Circuit breakers per (org, deployment): a small state machine fed by outcome events. One
//! tenant's failures never open another tenant's breaker. Consecutive failures open it for a
//! cooldown that doubles on each repeated trip (capped); when the cooldown ends one probe goes
//! through (half-open), and its outcome closes the breaker or opens it again. A provider's
//! Retry-After opens it for exactly that long. State lives in a registry keyed by stable ids,
//! outside the config snapshot, so reloads keep it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::Duration,
};

use modelgate_crds::compiled::CompiledBreaker;
use tokio::{sync::mpsc, time::Instant};

use crate::{fleet::Cooldown, sync};

const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(300);
const DEFAULT_FAILURE_RATE_PERCENT: u32 = 50;
const DEFAULT_MIN_REQUESTS: u32 = 20;
/// The window the failure rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    pub consecutive_failures: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// Failures per 100 outcomes in the window that open the breaker...
    pub failure_rate_percent: u32,
    /// ...once the window holds at least this many outcomes.
    pub min_requests: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            cooldown: DEFAULT_COOLDOWN,
            max_cooldown: DEFAULT_MAX_COOLDOWN,
            failure_rate_percent: DEFAULT_FAILURE_RATE_PERCENT,
            min_requests: DEFAULT_MIN_REQUESTS,
        }
    }
}

impl BreakerSettings {
    pub fn from_compiled(breaker: &CompiledBreaker) -> Self {
        let default = Self::default();
        Self {
            consecutive_failures: breaker
                .consecutive_failures
                .unwrap_or(default.consecutive_failures)
                .max(1),
            cooldown: breaker
                .cooldown_ms
                .map_or(default.cooldown, Duration::from_millis),
            max_cooldown: breaker
                .max_cooldown_ms
                .map_or(default.max_cooldown, Duration::from_millis),
            failure_rate_percent: breaker
                .failure_rate_percent
                .unwrap_or(default.failure_rate_percent),
            min_requests: breaker.min_requests.unwrap_or(default.min_requests).max(1),
        }
    }

    /// The cooldown of trip number `trips` (1-based): doubled per repeated trip, capped.
    fn cooldown(&self, trips: u32) -> Duration {
        let factor = 1u32
            .checked_shl(trips.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.cooldown
            .checked_mul(factor)
            .unwrap_or(self.max_cooldown)
            .min(self.max_cooldown)
    }
}

/// What the gate says about one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Closed: go ahead.
    Pass,
    /// The cooldown is over: this attempt is the one probe.
    Probe,
    /// Open until then.
    Open(Instant),
}

/// A state change worth logging and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    trips: u32,
    probing: bool,
    /// Outcomes in the current rate window: (window start, outcomes, failures).
    window: Option<(Instant, u32, u32)>,
}

impl State {
    /// Counts an outcome; returns the window's (outcomes, failures).
    fn count(&mut self, now: Instant, failed: bool) -> (u32, u32) {
        let (start, outcomes, failures) = match self.window {
            Some((start, n, f)) if now.saturating_duration_since(start) < RATE_WINDOW => {
                (start, n, f)
            }
            _ => (now, 0, 0),
        };
        let counted = (start, outcomes + 1, failures + u32::from(failed));
        self.window = Some(counted);
        (counted.1, counted.2)
    }
}

#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Breaker {
    pub fn gate(&self, now: Instant) -> Gate {
        let mut s = self.lock();
        match s.open_until {
            None => Gate::Pass,
            Some(until) if now < until || s.probing => Gate::Open(until),
            Some(_) => {
                s.probing = true;
                Gate::Probe
            }
        }
    }

    pub fn success(&self, now: Instant) -> Option<Transition> {
        let mut s = self.lock();
        s.consecutive = 0;
        s.count(now, false);
        if s.open_until.take().is_some() {
            s.probing = false;
            s.trips = 0;
            return Some(Transition::Closed);
        }
        None
    }

    pub fn failure(&self, now: Instant, settings: &BreakerSettings) -> Option<Transition> {
        let mut s = self.lock();
        s.consecutive += 1;
        let (outcomes, failures) = s.count(now, true);
        let rate_exceeded = outcomes >= settings.min_requests
            && failures * 100 >= settings.failure_rate_percent * outcomes;
        let streak = s.consecutive >= settings.consecutive_failures;
        if !(s.probing || (s.open_until.is_none() && (streak || rate_exceeded))) {
            return None;
        }
        s.trips += 1;
        s.probing = false;
        s.consecutive = 0;
        s.window = None;
        s.open_until = Some(now + settings.cooldown(s.trips));
        Some(Transition::Opened)
    }

    /// The provider asked for a pause (Retry-After): stay open at least that long.
    pub fn cool_down(&self, now: Instant, pause: Duration) -> Option<Transition> {
        let mut s = self.lock();
        let until = now + pause;
        let was_open = s.open_until.is_some();
        s.open_until = Some(s.open_until.map_or(until, |t| t.max(until)));
        s.probing = false;
        (!was_open).then_some(Transition::Opened)
    }

    /// How long the breaker stays open from `now`, if it is open.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        self.lock()
            .open_until
            .map(|until| until.saturating_duration_since(now))
    }

    /// For the metrics: 0 closed, 1 half-open (its cooldown is over or its probe is out), 2 open.
    pub fn state_code(&self, now: Instant) -> i64 {
        let s = self.lock();
        match s.open_until {
            None => 0,
            Some(until) if now < until && !s.probing => 2,
            Some(_) => 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        sync::lock(&self.state)
    }
}

/// Breakers by org, then by deployment id: one tenant's failures never touch another tenant's
/// breaker. Two levels so a lookup borrows both keys; the common case is a shared read lock.
#[derive(Default)]
pub struct Breakers {
    by_org: RwLock<HashMap<String, OrgBreakers>>,
    /// Where this replica's cooldowns go to reach the rest of the fleet (shared state only).
    announcer: OnceLock<mpsc::UnboundedSender<Cooldown>>,
}

/// One org's breakers by deployment id.
type OrgBreakers = HashMap<Arc<str>, Arc<Breaker>>;

impl Breakers {
    /// Sends every cooldown this replica starts to `announcer` from now on.
    pub fn announce_to(&self, announcer: mpsc::UnboundedSender<Cooldown>) {
        let _ = self.announcer.set(announcer);
    }

    /// Tells the fleet that `org`'s breaker of `deployment` opened for `pause`.
    pub fn announce(&self, org: &str, deployment: &Arc<str>, pause: Duration) {
        if let Some(announcer) = self.announcer.get() {
            let _ = announcer.send(Cooldown {
                org: org.to_owned(),
                deployment: deployment.clone(),
                pause,
            });
        }
    }

    /// Applies a cooldown another replica started.
    pub fn apply(&self, cooldown: &Cooldown) {
        self.get(&cooldown.org, &cooldown.deployment)
            .cool_down(Instant::now(), cooldown.pause);
    }

    /// (org, deployment id, [`Breaker::state_code`]) of every breaker that has seen traffic.
    pub fn states(&self, now: Instant) -> Vec<(String, Arc<str>, i64)> {
        sync::read(&self.by_org)
            .iter()
            .flat_map(|(org, breakers)| {
                breakers
                    .iter()
                    .map(move |(id, b)| (org.clone(), id.clone(), b.state_code(now)))
            })
            .collect()
    }

    pub fn get(&self, org: &str, deployment: &Arc<str>) -> Arc<Breaker> {
        let found = sync::read(&self.by_org)
            .get(org)
            .and_then(|by_deployment| by_deployment.get(deployment).cloned());
        if let Some(breaker) = found {
            return breaker;
        }
        let mut by_org = sync::write(&self.by_org);
        by_org
            .entry(org.to_owned())
            .or_default()
            .entry(deployment.clone())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
            failure_rate_percent: 100,
            min_requests: 1000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_over_the_window_opens_it_without_a_streak() {
        let b = Breaker::default();
        let s = BreakerSettings {
            consecutive_failures: 100,
            failure_rate_percent: 50,
            min_requests: 10,
            ..settings()
        };
        // Alternating outcomes: never a streak, but half of them fail.
        for i in 0..9 {
            let transition = if i % 2 == 0 {
                b.failure(Instant::now(), &s)
            } else {
                b.success(Instant::now())
            };
            assert_eq!(transition, None, "outcome {i}: fewer than 10 in the window");
        }
        assert_eq!(b.success(Instant::now()), None, "a success never opens it");
        assert_eq!(
            b.failure(Instant::now(), &s),
            Some(Transition::Opened),
            "6 of 11 failed"
        );

        // A new window after 30 s forgets old failures.
        let fresh = Breaker::default();
        for _ in 0..4 {
            fresh.failure(Instant::now(), &s);
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        for _ in 0..9 {
            fresh.success(Instant::now());
        }
        assert_eq!(
            fresh.failure(Instant::now(), &s),
            None,
            "1 of 10 in the new window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_probes_once_and_grows_its_cooldown() {
        let b = Breaker::default();
        let s = settings();
        assert_eq!(b.failure(Instant::now(), &s), None);
        assert_eq!(
            b.success(Instant::now()),
            None,
            "a success resets the count"
        );
        assert_eq!(b.failure(Instant::now(), &s), None);
        assert_eq!(b.failure(Instant::now(), &s), None);
        assert_eq!(b.failure(Instant::now(), &s), Some(Transition::Opened));
        assert!(matches!(b.gate(Instant::now()), Gate::Open(_)));

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.gate(Instant::now()), Gate::Probe);
        assert!(
            matches!(b.gate(Instant::now()), Gate::Open(_)),
            "one probe at a time"
        );
        assert_eq!(
            b.failure(Instant::now(), &s),
            Some(Transition::Opened),
            "a failed probe reopens"
        );

        // Second trip: 20 s; third: capped at 25 s.
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(matches!(b.gate(Instant::now()), Gate::Open(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.gate(Instant::now()), Gate::Probe);
        b.failure(Instant::now(), &s);
        tokio::time::advance(Duration::from_secs(24)).await;
        assert!(matches!(b.gate(Instant::now()), Gate::Open(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.gate(Instant::now()), Gate::Probe);
        assert_eq!(b.success(Instant::now()), Some(Transition::Closed));
        assert_eq!(b.gate(Instant::now()), Gate::Pass);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_opens_for_exactly_that_long() {
        let b = Breaker::default();
        assert_eq!(
            b.cool_down(Instant::now(), Duration::from_secs(7)),
            Some(Transition::Opened)
        );
        tokio::time::advance(Duration::from_millis(6999)).await;
        assert!(matches!(b.gate(Instant::now()), Gate::Open(_)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.gate(Instant::now()), Gate::Probe);
    }

    #[test]
    fn breakers_are_per_org() {
        let breakers = Breakers::default();
        let id: Arc<str> = Arc::from("ns/g/d");
        let a = breakers.get("org-a", &id);
        assert!(Arc::ptr_eq(&a, &breakers.get("org-a", &id)));
        assert!(!Arc::ptr_eq(&a, &breakers.get("org-b", &id)));
    }
}
