//! Operator metrics. Label values come from fixed sets (results, error reasons, kinds) or from
//! the namespaces the operator manages, never from object content.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, atomic::AtomicU64},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InjectionLabels {
    result: &'static str,
    reason: &'static str,
}

/// What one key, team or org spent this period, as the state store has it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeSpendRow {
    /// `key`, `team` or `org`.
    pub scope: &'static str,
    pub name: String,
    pub spend_usd: f64,
    /// Its budget's limit for the period, if it has one.
    pub budget_usd: Option<f64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    namespace: String,
    scope: &'static str,
    name: String,
}

/// Spend and budgets per namespace, replaced at each reconcile of it: a deleted key's series
/// go with it.
#[derive(Clone, Debug, Default)]
struct SpendSeries(Arc<Mutex<BTreeMap<String, Vec<ScopeSpendRow>>>>);

impl SpendSeries {
    fn family(
        &self,
        value: impl Fn(&ScopeSpendRow) -> Option<f64>,
    ) -> Family<ScopeLabels, Gauge<f64, AtomicU64>> {
        let family = Family::<ScopeLabels, Gauge<f64, AtomicU64>>::default();
        let rows = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (namespace, rows) in rows.iter() {
            for row in rows {
                if let Some(value) = value(row) {
                    let labels = ScopeLabels {
                        namespace: namespace.clone(),
                        scope: row.scope,
                        name: row.name.clone(),
                    };
                    family.get_or_create(&labels).set(value);
                }
            }
        }
        family
    }
}

impl Collector for SpendSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for (name, help, family) in [
            (
                "spend_usd",
                "What each key, team and org spent in its current budget period (the calendar month without a budget), from the state store",
                self.family(|row| Some(row.spend_usd)),
            ),
            (
                "budget_usd",
                "The budget limit of each key, team and org that has one, for its current period",
                self.family(|row| row.budget_usd),
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(metric)?;
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    spend: SpendSeries,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    failures: Family<ReasonLabels, Counter>,
    publishes: Counter,
    config_bytes: Family<NamespaceLabels, Gauge>,
    rejected_objects: Family<NamespaceLabels, Gauge>,
    status_writes: Family<KindLabels, Counter>,
    key_secrets_generated: Counter,
    leader: Gauge,
    injections: Family<InjectionLabels, Counter>,
    webhook_cert_not_after: Gauge,
    webhook_cert_renewals: Counter,
    pods_not_injected: Gauge,
    pods_stale_sidecar: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelgate_operator");
        let spend = SpendSeries::default();
        registry.register_collector(Box::new(spend.clone()));
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Namespace reconciles, by result (success, error)",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "reconcile_duration_seconds",
            "Time one namespace's reconcile took (compile, publish, statuses), whatever its result",
            reconcile_duration.clone(),
        );
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles by reason (Conflict, Forbidden, NotFound, Invalid, Unavailable, ApiError)",
            failures.clone(),
        );
        let publishes = Counter::default();
        registry.register(
            "publishes",
            "Config Secrets written because the compiled checksum changed",
            publishes.clone(),
        );
        let config_bytes = Family::<NamespaceLabels, Gauge>::default();
        registry.register(
            "config_bytes",
            "Size of the published config.json per namespace",
            config_bytes.clone(),
        );
        let rejected_objects = Family::<NamespaceLabels, Gauge>::default();
        registry.register(
            "rejected_objects",
            "Objects left out of the published config per namespace",
            rejected_objects.clone(),
        );
        let status_writes = Family::<KindLabels, Counter>::default();
        registry.register(
            "status_writes",
            "Status patches sent, by kind (unchanged statuses are not written)",
            status_writes.clone(),
        );
        let key_secrets_generated = Counter::default();
        registry.register(
            "key_secrets_generated",
            "Virtual-key Secrets generated",
            key_secrets_generated.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let injections = Family::<InjectionLabels, Counter>::default();
        registry.register(
            "injections",
            "Admission decisions on pods that asked for the sidecar: result injected or skipped, with the skip reason",
            injections.clone(),
        );
        let webhook_cert_not_after = Gauge::default();
        registry.register(
            "webhook_cert_not_after_seconds",
            "When the webhook serving certificate this replica presents expires (Unix seconds)",
            webhook_cert_not_after.clone(),
        );
        let webhook_cert_renewals = Counter::default();
        registry.register(
            "webhook_cert_renewals",
            "Writes of the webhook certificate Secret (first issue, renewals, CA rotation steps)",
            webhook_cert_renewals.clone(),
        );
        let pods_not_injected = Gauge::default();
        registry.register(
            "pods_not_injected",
            "Running pods that ask for the sidecar but have none (created while the injector was unavailable)",
            pods_not_injected.clone(),
        );
        let pods_stale_sidecar = Gauge::default();
        registry.register(
            "pods_stale_sidecar",
            "Pods whose sidecar differs from what the injector injects now (restart them to update)",
            pods_stale_sidecar.clone(),
        );
        Self {
            spend,
            registry,
            injections,
            webhook_cert_not_after,
            webhook_cert_renewals,
            pods_not_injected,
            pods_stale_sidecar,
            reconciles,
            reconcile_duration,
            failures,
            publishes,
            config_bytes,
            rejected_objects,
            status_writes,
            key_secrets_generated,
            leader,
        }
    }

    pub fn reconciled(&self, result: Result<(), &'static str>, seconds: f64) {
        self.reconcile_duration.observe(seconds);
        match result {
            Ok(()) => {
                self.reconciles
                    .get_or_create(&ResultLabels { result: "success" })
                    .inc();
            }
            Err(reason) => {
                self.reconciles
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
                self.failures.get_or_create(&ReasonLabels { reason }).inc();
            }
        }
    }

    pub fn published(&self, namespace: &str, bytes: usize) {
        self.publishes.inc();
        self.config_bytes
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_owned(),
            })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn rejected(&self, namespace: &str, count: usize) {
        self.rejected_objects
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn status_written(&self, kind: &'static str) {
        self.status_writes.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn key_secret_generated(&self) {
        self.key_secrets_generated.inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn injection(&self, result: &'static str, reason: &'static str) {
        self.injections
            .get_or_create(&InjectionLabels { result, reason })
            .inc();
    }

    pub fn set_webhook_cert_not_after(&self, unix_seconds: i64) {
        self.webhook_cert_not_after.set(unix_seconds);
    }

    pub fn webhook_cert_renewed(&self) {
        self.webhook_cert_renewals.inc();
    }

    pub fn set_pod_injection_gaps(&self, not_injected: usize, stale: usize) {
        self.pods_not_injected
            .set(i64::try_from(not_injected).unwrap_or(i64::MAX));
        self.pods_stale_sidecar
            .set(i64::try_from(stale).unwrap_or(i64::MAX));
    }

    /// The spend rows of `namespace`'s keys and policies, replacing the previous ones.
    pub fn set_spend(&self, namespace: &str, rows: Vec<ScopeSpendRow>) {
        let mut spend = self
            .spend
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if rows.is_empty() {
            spend.remove(namespace);
        } else {
            spend.insert(namespace.to_owned(), rows);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
