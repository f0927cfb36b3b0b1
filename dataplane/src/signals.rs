//! Live routing signals per deployment: in-flight requests, the current minute's requests and
//! tokens, and latency averages. They live in a registry keyed by the deployment's stable id,
//! outside the config snapshot, so a config swap never resets them.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::time::Instant;

use crate::sync::lock;

/// Weight of a new sample in the latency averages.
const EWMA_ALPHA: f64 = 0.2;

/// Everything routing reads about one deployment, at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SignalValues {
    pub in_flight: u64,
    pub rpm_used: u64,
    pub tpm_used: u64,
    /// Average time to first token of streamed answers, ms.
    pub ttft_ms: Option<f64>,
    /// Average latency per output token of complete answers, ms.
    pub per_token_ms: Option<f64>,
}

/// The current minute's counts and the latency averages, under one lock: routing reads them
/// together for every candidate.
#[derive(Default)]
struct Counters {
    minute: u64,
    requests: u64,
    tokens: u64,
    ttft_ms: Option<f64>,
    per_token_ms: Option<f64>,
}

/// The live signals of one deployment.
pub struct DeploymentSignals {
    clock: Clock,
    in_flight: AtomicU64,
    counters: Mutex<Counters>,
    /// Requests and tokens not yet added to the fleet's shared counts.
    unshared: Mutex<(u64, u64)>,
    /// The fleet's requests and tokens this minute, as last read, with the minute read in.
    fleet: Mutex<Option<(u64, u64, u64)>>,
}

/// Decrements the in-flight count when the call ends, however it ends.
pub struct InFlight(Arc<DeploymentSignals>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    pub fn signals(&self) -> &Arc<DeploymentSignals> {
        &self.0
    }
}

impl DeploymentSignals {
    fn new(clock: Clock) -> Self {
        Self {
            clock,
            in_flight: AtomicU64::new(0),
            counters: Mutex::new(Counters::default()),
            unshared: Mutex::new((0, 0)),
            fleet: Mutex::new(None),
        }
    }

    /// Counts a call to this deployment: one in flight (until the guard drops) and one request
    /// in the current minute.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.with_window(|c| c.requests += 1);
        lock(&self.unshared).0 += 1;
        InFlight(self.clone())
    }

    /// Adds tokens to the current minute.
    pub fn add_tokens(&self, tokens: u64) {
        self.with_window(|c| c.tokens += tokens);
        lock(&self.unshared).1 += tokens;
    }

    /// Takes the requests and tokens counted here since the last call, to add to the fleet's.
    pub fn take_unshared(&self) -> (u64, u64) {
        std::mem::take(&mut *lock(&self.unshared))
    }

    /// Gives back counts that could not be shared, to try again.
    pub fn give_back(&self, requests: u64, tokens: u64) {
        let mut unshared = lock(&self.unshared);
        unshared.0 += requests;
        unshared.1 += tokens;
    }

    /// The fleet's requests and tokens this minute; routing reads the larger of these and the
    /// local counts.
    pub fn set_fleet(&self, requests: u64, tokens: u64) {
        *lock(&self.fleet) = Some((self.clock.minute(), requests, tokens));
    }

    pub fn record_ttft(&self, ms: f64) {
        let mut c = lock(&self.counters);
        c.ttft_ms = Some(ewma(c.ttft_ms, ms));
    }

    pub fn record_per_token(&self, ms: f64) {
        let mut c = lock(&self.counters);
        c.per_token_ms = Some(ewma(c.per_token_ms, ms));
    }

    pub fn values(&self) -> SignalValues {
        self.values_at(self.clock.minute())
    }

    /// The current minute on the signals' clock (shared by every deployment of a registry).
    pub fn minute(&self) -> u64 {
        self.clock.minute()
    }

    /// The values, with `minute` as the current minute.
    pub fn values_at(&self, minute: u64) -> SignalValues {
        let (fleet_requests, fleet_tokens) = match *lock(&self.fleet) {
            Some((at, requests, tokens)) if at == minute => (requests, tokens),
            _ => (0, 0),
        };
        let c = lock(&self.counters);
        let current = c.minute == minute;
        SignalValues {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            rpm_used: if current { c.requests } else { 0 }.max(fleet_requests),
            tpm_used: if current { c.tokens } else { 0 }.max(fleet_tokens),
            ttft_ms: c.ttft_ms,
            per_token_ms: c.per_token_ms,
        }
    }

    fn with_window(&self, update: impl FnOnce(&mut Counters)) {
        let minute = self.clock.minute();
        let mut c = lock(&self.counters);
        if c.minute != minute {
            c.minute = minute;
            c.requests = 0;
            c.tokens = 0;
        }
        update(&mut c);
    }
}

fn ewma(previous: Option<f64>, sample: f64) -> f64 {
    previous.map_or(sample, |p| p + EWMA_ALPHA * (sample - p))
}

/// Signals by deployment id, shared by every snapshot.
pub struct SignalRegistry {
    clock: Clock,
    by_id: Mutex<HashMap<String, Arc<DeploymentSignals>>>,
}

impl Default for SignalRegistry {
    fn default() -> Self {
        Self {
            clock: Clock(Instant::now()),
            by_id: Mutex::new(HashMap::new()),
        }
    }
}

impl SignalRegistry {
    /// The signals of `id`, created on first use.
    pub fn get(&self, id: &str) -> Arc<DeploymentSignals> {
        lock(&self.by_id)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(DeploymentSignals::new(self.clock)))
            .clone()
    }

    /// Forgets deployments no longer in the config (snapshots still serving keep their Arcs).
    pub fn retain(&self, live: &HashSet<&str>) {
        lock(&self.by_id).retain(|id, _| live.contains(id.as_str()));
    }
}

/// Whole minutes since the registry was made, on tokio's clock (so tests can pause it).
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn minute(self) -> u64 {
        Instant::now().saturating_duration_since(self.0).as_secs() / 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_resets_every_minute_and_in_flight_follows_guards() {
        let registry = SignalRegistry::default();
        let signals = registry.get("ns/g/d");
        let a = signals.begin();
        let b = signals.begin();
        signals.add_tokens(120);
        assert_eq!(
            (
                signals.values().in_flight,
                signals.values().rpm_used,
                signals.values().tpm_used
            ),
            (2, 2, 120)
        );
        drop(a);
        assert_eq!(signals.values().in_flight, 1);
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert_eq!(
            (signals.values().rpm_used, signals.values().tpm_used),
            (0, 0)
        );
        drop(b);
        assert_eq!(signals.values().in_flight, 0);
        assert!(
            Arc::ptr_eq(&signals, &registry.get("ns/g/d")),
            "one entry per id"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn routing_sees_the_larger_of_local_and_fleet_usage_and_unshared_counts_are_taken_once() {
        let signals = SignalRegistry::default().get("x");
        drop(signals.begin());
        signals.add_tokens(10);
        assert_eq!(signals.take_unshared(), (1, 10));
        assert_eq!(signals.take_unshared(), (0, 0));
        signals.give_back(1, 10);
        assert_eq!(signals.take_unshared(), (1, 10));
        signals.set_fleet(7, 5);
        assert_eq!(
            (signals.values().rpm_used, signals.values().tpm_used),
            (7, 10)
        );
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert_eq!(
            (signals.values().rpm_used, signals.values().tpm_used),
            (0, 0)
        );
    }

    #[test]
    fn latency_is_an_exponential_average() {
        let signals = SignalRegistry::default().get("x");
        signals.record_ttft(100.0);
        signals.record_ttft(200.0);
        assert_eq!(signals.values().ttft_ms, Some(120.0));
        assert_eq!(signals.values().per_token_ms, None);
    }
}
