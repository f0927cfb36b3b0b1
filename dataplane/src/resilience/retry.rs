//! Retry policy: how often one link is retried, how long to back off (capped exponential with
//! full jitter), and a budget that keeps retries to a share of recent traffic so a failing
//! provider never sees a retry storm.

use std::{sync::Mutex, time::Duration};

use modelgate_crds::compiled::CompiledRetries;
use tokio::time::Instant;

/// Retries of one link after its first attempt, unless the policy says otherwise. None: the
/// next link of the plan is the retry, and a policy turns same-link retries on.
pub const DEFAULT_RETRIES_PER_LINK: u32 = 0;
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(200);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Attempts for one request across the whole chain, unless the policy says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries_per_link: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries_per_link: DEFAULT_RETRIES_PER_LINK,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl RetryPolicy {
    pub fn from_compiled(retries: &CompiledRetries) -> Self {
        let default = Self::default();
        Self {
            retries_per_link: retries.attempts.unwrap_or(default.retries_per_link),
            backoff_base: retries
                .backoff_base_ms
                .map_or(default.backoff_base, Duration::from_millis),
            backoff_max: retries
                .backoff_max_ms
                .map_or(default.backoff_max, Duration::from_millis),
            max_attempts: retries.max_attempts.unwrap_or(default.max_attempts).max(1),
        }
    }

    /// The pause before retry number `retry` (0-based): uniform in
    /// `[0, min(max, base * 2^retry)]` ("full jitter"), so retries of many clients spread out.
    pub fn backoff(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self
            .backoff_base
            .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max);
        ceiling.mul_f64(rng.f64())
    }
}

/// Allows retries up to `ratio` of the requests seen in the last window, plus a floor per second
/// so a quiet gateway can still retry (the rule tower and linkerd use).
pub struct RetryBudget {
    ratio: f64,
    floor_per_second: f64,
    window: Duration,
    state: Mutex<BudgetWindow>,
}

struct BudgetWindow {
    started: Instant,
    requests: u64,
    retries: u64,
}

pub const BUDGET_RATIO: f64 = 0.2;
pub const BUDGET_FLOOR_PER_SECOND: f64 = 10.0;
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(BUDGET_RATIO, BUDGET_FLOOR_PER_SECOND, BUDGET_WINDOW)
    }
}

impl RetryBudget {
    pub fn new(ratio: f64, floor_per_second: f64, window: Duration) -> Self {
        Self {
            ratio,
            floor_per_second,
            window,
            state: Mutex::new(BudgetWindow {
                started: Instant::now(),
                requests: 0,
                retries: 0,
            }),
        }
    }

    /// Counts one request.
    pub fn deposit(&self) {
        self.current().requests += 1;
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn withdraw(&self) -> bool {
        let mut w = self.current();
        let allowed =
            self.floor_per_second * self.window.as_secs_f64() + self.ratio * w.requests as f64;
        if (w.retries as f64) < allowed {
            w.retries += 1;
            true
        } else {
            false
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, BudgetWindow> {
        let mut w = crate::sync::lock(&self.state);
        if w.started.elapsed() >= self.window {
            *w = BudgetWindow {
                started: Instant::now(),
                requests: 0,
                retries: 0,
            };
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_a_capped_exponential() {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let mut rng = fastrand::Rng::with_seed(3);
        for (retry, ceiling_ms) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (30, 1000),
            (200, 1000),
        ] {
            let samples: Vec<Duration> =
                (0..2000).map(|_| policy.backoff(retry, &mut rng)).collect();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(
                samples.iter().all(|d| *d <= ceiling),
                "retry {retry}: above {ceiling:?}"
            );
            // Full jitter: spread over the whole range, not clustered at the top.
            let low = samples.iter().filter(|d| **d < ceiling / 4).count();
            let high = samples.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(
                (350..650).contains(&low) && (350..650).contains(&high),
                "retry {retry}: {low} low, {high} high"
            );
        }
    }

    #[test]
    fn the_policy_comes_from_the_compiled_config_with_defaults() {
        let compiled = CompiledRetries {
            attempts: Some(3),
            backoff_base_ms: Some(50),
            backoff_max_ms: None,
            max_attempts: Some(0),
        };
        let policy = RetryPolicy::from_compiled(&compiled);
        assert_eq!(policy.retries_per_link, 3);
        assert_eq!(policy.backoff_base, Duration::from_millis(50));
        assert_eq!(policy.backoff_max, DEFAULT_BACKOFF_MAX);
        assert_eq!(policy.max_attempts, 1, "at least one attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_a_share_of_requests_plus_a_floor() {
        let budget = RetryBudget::new(0.2, 1.0, Duration::from_secs(10));
        for _ in 0..100 {
            budget.deposit();
        }
        // 10 from the floor (1/s over 10 s) + 20% of 100 requests.
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 30);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            (0..100).filter(|_| budget.withdraw()).count(),
            10,
            "a new window starts from the floor"
        );
    }
}
