//! Prometheus metrics with bounded labels: endpoints, providers, error codes and outcomes are all
//! `&'static str` from fixed sets, never client input.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{Finished, LiveSource, finished::FinishedMetrics, live::Live};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: &'static str,
    deployment: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Tasks alive in the runtime, read at each scrape (a leak shows as growth at rest).
    runtime_tasks: Gauge,
    requests: Family<RequestLabels, Counter>,
    finished: FinishedMetrics,
    live: Live,
    attempts: Family<AttemptLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    rejected_objects: Gauge,
    decisions_dropped: Counter,
    breaker_transitions: Family<TransitionLabels, Counter>,
    limit_refusals: Family<RefusalLabels, Counter>,
    limit_store_errors: Family<OperationLabels, Counter>,
    remote_cooldowns: Counter,
    settles_pending: Gauge,
    source_connected: Gauge,
    settles_dropped: Counter,
    fleet_usage_syncs: Counter,
    cache_requests: Family<ResultLabels, Counter>,
    cache_stored_bytes: Counter,
    cache_errors: Family<OperationLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    scope: &'static str,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    transition: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by endpoint and result code",
            requests.clone(),
        );
        let finished = FinishedMetrics::register(&mut registry);
        let live = Live::default();
        registry.register_collector(Box::new(live.clone()));
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Calls to providers by provider, deployment and outcome",
            attempts.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("config_reloads", "Config loads by result", reloads.clone());
        let rejected_objects = Gauge::default();
        registry.register(
            "config_rejected_objects",
            "Objects left out of the current config",
            rejected_objects.clone(),
        );
        let source_connected = Gauge::default();
        registry.register(
            "config_source_connected",
            "1 while the Kubernetes API answers the config watch (0 while the last good config serves without it)",
            source_connected.clone(),
        );
        let settles_pending = Gauge::default();
        registry.register(
            "limit_settles_pending",
            "Settlements waiting for the limit store to come back",
            settles_pending.clone(),
        );
        let settles_dropped = Counter::default();
        registry.register(
            "limit_settles_dropped",
            "Settlements dropped because the retry queue was full",
            settles_dropped.clone(),
        );
        let decisions_dropped = Counter::default();
        registry.register(
            "decision_log_dropped",
            "Decision records dropped because the writer fell behind",
            decisions_dropped.clone(),
        );
        let breaker_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "breaker_transitions",
            "Circuit breaker state changes (per org and deployment, summed)",
            breaker_transitions.clone(),
        );
        let limit_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Requests refused by a budget or rate limit, by scope (key, team, org) and limit",
            limit_refusals.clone(),
        );
        let limit_store_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "limit_store_errors",
            "Failed calls to the budget and rate-limit store, by operation (admit, settle)",
            limit_store_errors.clone(),
        );
        let cache_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cache_requests",
            "Cache decisions by result (hit, miss, bypass, store-skipped)",
            cache_requests.clone(),
        );
        let cache_stored_bytes = Counter::default();
        registry.register(
            "cache_stored_bytes",
            "Bytes of answers written to the response cache",
            cache_stored_bytes.clone(),
        );
        let cache_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "cache_errors",
            "Failed cache store calls, served as misses (get, put)",
            cache_errors.clone(),
        );
        let fleet_usage_syncs = Counter::default();
        registry.register(
            "fleet_usage_syncs",
            "Rounds of sharing deployment usage with the fleet and reading its totals",
            fleet_usage_syncs.clone(),
        );
        let remote_cooldowns = Counter::default();
        registry.register(
            "remote_cooldowns",
            "Breaker cooldowns started by another replica and applied here",
            remote_cooldowns.clone(),
        );
        let runtime_tasks = Gauge::default();
        registry.register(
            "runtime_alive_tasks",
            "Tasks alive in the async runtime when scraped",
            runtime_tasks.clone(),
        );
        Self {
            runtime_tasks,
            registry,
            remote_cooldowns,
            fleet_usage_syncs,
            cache_requests,
            cache_stored_bytes,
            cache_errors,
            limit_refusals,
            limit_store_errors,
            breaker_transitions,
            requests,
            finished,
            live,
            attempts,
            reloads,
            rejected_objects,
            decisions_dropped,
            settles_pending,
            settles_dropped,
            source_connected,
        }
    }

    /// The source of the series read at scrape time; set once, by the gateway.
    pub fn set_live(&self, source: Box<dyn LiveSource>) {
        let _ = self.live.0.set(source);
    }

    pub fn limit_refused(&self, scope: &'static str, limit: &'static str) {
        self.limit_refusals
            .get_or_create(&RefusalLabels { scope, limit })
            .inc();
    }

    pub fn cache(&self, result: &'static str) {
        self.cache_requests
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn cache_stored(&self, bytes: usize) {
        self.cache_stored_bytes.inc_by(bytes as u64);
    }

    pub fn cache_error(&self, operation: &'static str) {
        self.cache_errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    pub fn fleet_usage_synced(&self) {
        self.fleet_usage_syncs.inc();
    }

    pub fn config_source_connected(&self, up: bool) {
        self.source_connected.set(i64::from(up));
    }

    pub fn settles_pending(&self, count: usize) {
        self.settles_pending
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn settle_dropped(&self) {
        self.settles_dropped.inc();
    }

    pub fn remote_cooldown(&self) {
        self.remote_cooldowns.inc();
    }

    pub fn limit_store_error(&self, operation: &'static str) {
        self.limit_store_errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// A request is finished: its count by result code, and the series of [`Finished`].
    pub fn request(&self, code: &'static str, finished: &Finished<'_>) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: finished.endpoint,
                code,
            })
            .inc();
        self.finished.observe(finished);
    }

    pub fn attempt(&self, provider: &'static str, deployment: &str, outcome: &'static str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                provider,
                deployment: deployment.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn set_rejected_objects(&self, count: usize) {
        self.rejected_objects
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// A breaker opened or closed (`transition`: `opened` or `closed`).
    pub fn breaker(&self, transition: &'static str) {
        self.breaker_transitions
            .get_or_create(&TransitionLabels { transition })
            .inc();
    }

    pub fn decision_dropped(&self) {
        self.decisions_dropped.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let alive = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
