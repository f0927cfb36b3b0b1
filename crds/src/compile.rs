//! `compile`: CRs + Secrets -> CompiledConfig and one report per object. Pure: no I/O, no clock
//! (the caller passes `now`), deterministic order, so the operator and the standalone data plane
//! get byte-equal output from equal input.

mod group;
mod key;
mod policy;
mod secrets;
mod upstream;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::{
    compiled::CompiledConfig,
    model_group::ModelGroup,
    report::{ObjectKind, ObjectReport, Rejection},
    routing_policy::RoutingPolicy,
    virtual_key::VirtualKey,
};

pub use policy::{DEFAULT_AUTO_NAME, DEFAULT_EXPLORATION_PERCENT, DEFAULT_TOLERANCE_PERCENT};
pub use secrets::{SecretIndex, SecretUse};
pub use upstream::{forbidden_address, is_loopback};

/// Everything the compiler reads: the three CRDs, the Secrets they reference, and the org of
/// each namespace.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub model_groups: Vec<ModelGroup>,
    pub routing_policies: Vec<RoutingPolicy>,
    pub virtual_keys: Vec<VirtualKey>,
    pub secrets: Vec<Secret>,
    /// Namespaces' `modelgate.io/org` labels; a namespace not listed is an org of its own name.
    pub namespace_orgs: BTreeMap<String, String>,
    pub mode: Mode,
}

/// Who wrote the resources: tenants of a cluster, or the one author of a standalone file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Objects from the API server: loopback upstreams only where a namespace allows them.
    #[default]
    Cluster,
    /// A file its author runs: loopback upstreams are allowed.
    Standalone,
}

impl Resources {
    /// The org every VirtualKey of `namespace` belongs to.
    pub fn org_of<'a>(&'a self, namespace: &'a str) -> &'a str {
        self.namespace_orgs
            .get(namespace)
            .map_or(namespace, String::as_str)
    }

    /// Whether the ModelGroups of `namespace` may name loopback `baseUrl`s: always in a
    /// standalone file, in a cluster when the namespace default RoutingPolicy says so.
    pub fn allows_loopback(&self, namespace: &str) -> bool {
        self.mode == Mode::Standalone
            || self.routing_policies.iter().any(|p| {
                p.namespace().as_deref().unwrap_or("default") == namespace
                    && p.spec.allow_loopback_upstreams
                    && p.spec.orgs.is_empty()
                    && p.spec.teams.is_empty()
            })
    }
}

/// Compiles every object it can; an invalid object is left out and reported, never blocking the
/// valid ones.
pub fn compile(resources: &Resources, now: jiff::Timestamp) -> (CompiledConfig, Vec<ObjectReport>) {
    let secrets = SecretIndex::new(&resources.secrets);
    let mut config = CompiledConfig::empty();
    let mut reports = Vec::new();

    let context = group::GroupContext {
        secrets: &secrets,
        resources,
        now,
    };
    let groups = group::compile_all(&resources.model_groups, &context);
    let mut warnings: BTreeMap<String, Vec<Rejection>> = BTreeMap::new();
    for (id, warning) in groups.warnings {
        warnings.entry(id).or_default().push(warning);
    }
    for (object, outcome) in groups.outcomes {
        let mut report = report(ObjectKind::ModelGroup, object, outcome);
        if report.is_accepted() {
            report.warnings = warnings
                .remove(&format!("{}/{}", report.namespace, report.name))
                .unwrap_or_default();
        }
        reports.push(report);
    }
    config.model_groups = groups.accepted;

    let policies = policy::compile_all(&resources.routing_policies, &config.model_groups);
    for (object, outcome) in policies.outcomes {
        reports.push(report(ObjectKind::RoutingPolicy, object, outcome));
    }
    config.policies = policies.accepted;

    let keys = key::compile_all(resources, &secrets, &config.policies, now);
    for (object, outcome) in keys.outcomes {
        reports.push(report(ObjectKind::VirtualKey, object, outcome));
    }
    config.keys = keys.accepted;

    config.seal();
    reports.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    (config, reports)
}

/// Identity of an input object, as carried through the per-kind compilers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjectRef {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
}

impl ObjectRef {
    pub(crate) fn of<K: ResourceExt>(object: &K) -> Self {
        Self {
            namespace: object.namespace().unwrap_or_else(|| "default".to_owned()),
            name: object.name_any(),
            generation: object.meta().generation,
        }
    }

    /// `namespace/name`, the id used for cross-references in the compiled config.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What a per-kind compiler hands back.
pub(crate) struct Compiled<T> {
    pub accepted: BTreeMap<String, T>,
    pub outcomes: Vec<(ObjectRef, Result<(), Rejection>)>,
    /// Accepted objects (by id) that deserve a look.
    pub warnings: Vec<(String, Rejection)>,
}

fn report(kind: ObjectKind, object: ObjectRef, outcome: Result<(), Rejection>) -> ObjectReport {
    ObjectReport {
        kind,
        namespace: object.namespace,
        name: object.name,
        generation: object.generation,
        outcome,
        warnings: Vec::new(),
    }
}

/// Sort key that makes "first come, first served" conflicts deterministic: the older object
/// wins, then the name decides (standalone files have no creation timestamps).
pub(crate) fn precedence<K: ResourceExt>(object: &K) -> (String, Option<jiff::Timestamp>, String) {
    (
        object.namespace().unwrap_or_else(|| "default".to_owned()),
        object.meta().creation_timestamp.as_ref().map(|t| t.0),
        object.name_any(),
    )
}

/// Milliseconds of an optional duration field, or a rejection naming the field.
pub(crate) fn duration_ms(
    value: Option<&crate::common::DurationString>,
    field: &str,
) -> Result<Option<u64>, Rejection> {
    value
        .map(|d| {
            d.parse()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .map_err(|e| {
                    Rejection::new(crate::report::Reason::InvalidSpec, format!("{field}: {e}"))
                })
        })
        .transpose()
}

pub(crate) fn compile_timeouts(
    timeouts: Option<&crate::common::Timeouts>,
    field: &str,
) -> Result<crate::compiled::CompiledTimeouts, Rejection> {
    let Some(t) = timeouts else {
        return Ok(Default::default());
    };
    Ok(crate::compiled::CompiledTimeouts {
        connect_ms: duration_ms(t.connect.as_ref(), &format!("{field}.connect"))?,
        first_byte_ms: duration_ms(t.first_byte.as_ref(), &format!("{field}.firstByte"))?,
        idle_ms: duration_ms(t.idle.as_ref(), &format!("{field}.idle"))?,
        total_ms: duration_ms(t.total.as_ref(), &format!("{field}.total"))?,
    })
}
