//! One namespace's reconcile: make sure generated keys exist, compile everything in the
//! namespace, publish the config if its checksum changed, then write each object's status.
//! Invalid objects are reported on their own status and never block the valid ones.

use kube::{Client, ResourceExt, runtime::events::Recorder};
use modelgate_crds::{CompiledConfig, ObjectKind, ObjectReport, Resources, VirtualKey, compile};
use serde_json::{Map, json};

pub use crate::error::ReconcileError;
use crate::{keys, metrics::Metrics, publish, scope::Scopes, spend::SpendReader, status};

/// What a reconcile did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub published: bool,
    pub status_writes: usize,
    pub rejected: usize,
}

pub struct Context {
    pub client: Client,
    pub scopes: Scopes,
    pub recorder: Recorder,
    pub metrics: std::sync::Arc<Metrics>,
    /// Reads spend for VirtualKey status, when a shared state store is configured.
    pub spend: Option<SpendReader>,
}

pub async fn reconcile(ctx: &Context, namespace: &str) -> Result<Outcome, ReconcileError> {
    let Some(stores) = ctx.scopes.stores(namespace) else {
        return Ok(Outcome::default());
    };
    let mut resources = stores.resources(namespace);
    let has_objects = !(resources.model_groups.is_empty()
        && resources.routing_policies.is_empty()
        && resources.virtual_keys.is_empty());
    // A namespace whose last object went away still gets an (empty) config, so data planes stop
    // serving what was deleted; one that never had any gets nothing.
    if !has_objects && !stores.has_published(namespace) {
        return Ok(Outcome::default());
    }
    let generated = keys::ensure_generated(
        &ctx.client,
        namespace,
        &resources.virtual_keys,
        &resources.secrets,
    )
    .await?;
    for secret in &generated {
        ctx.metrics.key_secret_generated();
        resources
            .secrets
            .retain(|s| s.name_any() != secret.name_any());
    }
    resources.secrets.extend(generated);

    let (config, reports) = compile(&resources, jiff::Timestamp::now());
    let published = publish::publish(
        &ctx.client,
        namespace,
        &config,
        stores.published_checksum(namespace).as_deref(),
        &ctx.metrics,
    )
    .await?;

    let rejected = reports.iter().filter(|r| !r.is_accepted()).count();
    ctx.metrics.rejected(namespace, rejected);
    let mut status_writes = 0;
    let mut first_error = None;
    for report in &reports {
        match write_status(ctx, &resources, &config, report).await {
            Ok(true) => status_writes += 1,
            Ok(false) => {}
            // One object's failed write does not stop the others; the namespace is retried.
            Err(error) => {
                tracing::warn!(namespace, kind = report.kind.as_str(), name = %report.name, %error, "status write failed");
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(Outcome {
        published,
        status_writes,
        rejected,
    })
}

async fn write_status(
    ctx: &Context,
    resources: &Resources,
    config: &CompiledConfig,
    report: &ObjectReport,
) -> Result<bool, ReconcileError> {
    let checksum = config.checksum.as_str();
    let written = match report.kind {
        ObjectKind::ModelGroup => {
            let Some(object) = find(&resources.model_groups, report) else {
                return Ok(false);
            };
            let id = format!("{}/{}", report.namespace, report.name);
            let mut extra = Map::new();
            if let Some(group) = config.model_groups.get(&id) {
                extra.insert("deployments".to_owned(), json!(group.deployments.len()));
            }
            status::apply(&ctx.client, &ctx.recorder, object, report, checksum, extra).await?
        }
        ObjectKind::RoutingPolicy => {
            let Some(object) = find(&resources.routing_policies, report) else {
                return Ok(false);
            };
            status::apply(
                &ctx.client,
                &ctx.recorder,
                object,
                report,
                checksum,
                Map::new(),
            )
            .await?
        }
        ObjectKind::VirtualKey => {
            let Some(object) = find(&resources.virtual_keys, report) else {
                return Ok(false);
            };
            let extra = spend_fields(ctx, object).await;
            status::apply(&ctx.client, &ctx.recorder, object, report, checksum, extra).await?
        }
    };
    if written {
        ctx.metrics.status_written(report.kind.as_str());
    }
    Ok(written)
}

/// Spend and remaining budget for a budgeted key, when a state store is configured. If the
/// store cannot be read, the last reported values are kept rather than cleared.
async fn spend_fields(ctx: &Context, key: &VirtualKey) -> Map<String, serde_json::Value> {
    let Some(reader) = &ctx.spend else {
        return Map::new();
    };
    match reader.read(key).await {
        None => Map::new(),
        Some(Ok(spend)) => spend.status_fields(),
        Some(Err(error)) => {
            tracing::warn!(%error, name = %key.name_any(), "cannot read spend from the state store");
            let mut kept = Map::new();
            if let Some(status) = &key.status {
                for (field, value) in [
                    ("spend", json!(status.spend)),
                    ("remaining", json!(status.remaining)),
                    ("budgetPeriod", json!(status.budget_period)),
                ] {
                    if !value.is_null() {
                        kept.insert(field.to_owned(), value);
                    }
                }
            }
            kept
        }
    }
}

fn find<'a, K: ResourceExt>(objects: &'a [K], report: &ObjectReport) -> Option<&'a K> {
    objects.iter().find(|o| o.name_any() == report.name)
}
