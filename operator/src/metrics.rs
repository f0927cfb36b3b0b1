//! Operator metrics. Label values come from fixed sets (results, error reasons, kinds) or from
//! the namespaces the operator manages, never from object content.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
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

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    publishes: Counter,
    config_bytes: Family<NamespaceLabels, Gauge>,
    rejected_objects: Family<NamespaceLabels, Gauge>,
    status_writes: Family<KindLabels, Counter>,
    key_secrets_generated: Counter,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelgate_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Namespace reconciles, by result (success, error)",
            reconciles.clone(),
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
        Self {
            registry,
            reconciles,
            failures,
            publishes,
            config_bytes,
            rejected_objects,
            status_writes,
            key_secrets_generated,
            leader,
        }
    }

    pub fn reconciled(&self, result: Result<(), &'static str>) {
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

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
