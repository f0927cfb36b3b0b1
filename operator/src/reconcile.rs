//! One namespace's reconcile: make sure generated keys exist, compile everything in the
//! namespace, publish the config if its checksum changed, then write each object's status.
//! Invalid objects are reported on their own status and never block the valid ones.

use k8s_openapi::api::core::v1::Secret;
use kube::{Client, Resource, ResourceExt, runtime::events::Recorder};
use modelgate_crds::{
    CompiledConfig, ObjectKind, ObjectReport, Reason, Rejection, Resources, RoutingPolicy,
    VirtualKey, compile,
};
use serde_json::{Map, json};

pub use crate::error::ReconcileError;
use crate::{
    keys,
    metrics::{Metrics, ScopeSpendRow},
    publish,
    scope::Scopes,
    served::ServedSummary,
    spend::SpendReader,
    status,
};

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
    /// This operator's ServiceAccount (`namespace:name`), for the RoleBinding a status asks for.
    pub service_account: Option<String>,
    /// What each namespace's statuses last said its data planes serve.
    pub served: std::sync::Mutex<std::collections::HashMap<String, ServedSummary>>,
}

impl Context {
    /// Whether the data planes of `namespace` serve something else than its status says.
    pub fn served_changed(&self, namespace: &str) -> bool {
        if !self.scopes.watches(namespace) {
            return false;
        }
        let Some(tenant) = self.scopes.existing_tenant(namespace) else {
            return false;
        };
        let Some(checksum) = tenant.published_checksum(namespace, publish::CONFIG_SECRET) else {
            return false;
        };
        let now = tenant.served(&checksum);
        let served = self
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        served.get(namespace) != Some(&now)
    }
}

pub async fn reconcile(ctx: &Context, namespace: &str) -> Result<Outcome, ReconcileError> {
    if !ctx.scopes.watches(namespace) {
        return Ok(Outcome::default());
    }
    // A namespace whose last object went away still gets an (empty) config, so data planes stop
    // serving what was deleted; one that never had any gets nothing, and its Secrets are never
    // watched (the operator may read them only where a RoleBinding lets it).
    let has_objects = ctx.scopes.has_objects(namespace);
    let tenant = match ctx.scopes.existing_tenant(namespace) {
        Some(tenant) => tenant,
        None if has_objects => ctx.scopes.tenant(namespace),
        None => return Ok(Outcome::default()),
    };
    if !tenant.ready().await {
        return no_secret_access(ctx, namespace).await;
    }
    if !has_objects && !tenant.has_published(namespace) {
        return Ok(Outcome::default());
    }
    let mut resources = ctx.scopes.resources(namespace, &tenant);
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
    let unlabelled = referenced_but_unlabelled(&ctx.client, namespace, &resources).await?;
    resources.secrets.extend(unlabelled);

    let (config, reports) = compile(&resources, jiff::Timestamp::now());
    let cached_config = tenant.published_checksum(namespace, publish::CONFIG_SECRET);
    let cached_credentials = tenant.published_checksum(namespace, publish::CREDENTIALS_SECRET);
    let (checksum, published) = publish::publish(
        &ctx.client,
        namespace,
        &config,
        publish::Published {
            config: cached_config.as_deref(),
            credentials: cached_credentials.as_deref(),
        },
        &ctx.metrics,
    )
    .await?;

    let served = tenant.served(&checksum);
    let rejected = reports.iter().filter(|r| !r.is_accepted()).count();
    ctx.metrics.rejected(namespace, rejected);
    let mut status_writes = 0;
    let mut first_error = None;
    let mut spend = Vec::new();
    for report in &reports {
        let published = (checksum.as_str(), Some(&served));
        match write_status(ctx, &resources, &config, published, report, &mut spend).await {
            Ok(true) => status_writes += 1,
            Ok(false) => {}
            // One object's failed write does not stop the others; the namespace is retried.
            Err(error) => {
                tracing::warn!(namespace, kind = report.kind.as_str(), name = %report.name, %error, "status write failed");
                first_error.get_or_insert(error);
            }
        }
    }
    if ctx.spend.is_some() {
        ctx.metrics.set_spend(namespace, spend);
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    ctx.served
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(namespace.to_owned(), served);
    Ok(Outcome {
        published,
        status_writes,
        rejected,
    })
}

/// Referenced Secrets the labelled watches do not hold: their metadata only (never their values),
/// so a reference to an unlabelled Secret is told how to label it instead of "not found".
async fn referenced_but_unlabelled(
    client: &Client,
    namespace: &str,
    resources: &Resources,
) -> Result<Vec<Secret>, ReconcileError> {
    let known: std::collections::BTreeSet<String> = resources
        .secrets
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let referenced = resources
        .model_groups
        .iter()
        .flat_map(|g| &g.spec.deployments)
        .filter_map(|d| d.credentials.as_ref())
        .flat_map(|c| {
            c.secret_key_ref.iter().chain(c.aws.iter().flat_map(|aws| {
                [&aws.access_key_id_ref, &aws.secret_access_key_ref]
                    .into_iter()
                    .chain(aws.session_token_ref.as_ref())
            }))
        })
        .chain(
            resources
                .virtual_keys
                .iter()
                .filter_map(|k| k.spec.key_secret_ref.as_ref()),
        )
        .map(|s| s.name.clone())
        .filter(|name| !known.contains(name))
        .collect::<std::collections::BTreeSet<String>>();
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let mut found = Vec::new();
    for name in referenced {
        if let Some(meta) = api
            .get_metadata_opt(&name)
            .await
            .map_err(ReconcileError::api("read a referenced Secret's labels"))?
        {
            found.push(Secret {
                metadata: meta.metadata,
                ..Secret::default()
            });
        }
    }
    Ok(found)
}

/// The namespace's Secrets cannot be read: every object says so, with the RoleBinding that
/// fixes it, and nothing is published (the last published config keeps serving).
async fn no_secret_access(ctx: &Context, namespace: &str) -> Result<Outcome, ReconcileError> {
    let resources = ctx
        .scopes
        .resources(namespace, &ctx.scopes.tenant(namespace));
    let subject = ctx.service_account.as_deref().map_or_else(
        || "<namespace>:<name> of the operator's ServiceAccount".to_owned(),
        str::to_owned,
    );
    let rejection = Rejection::new(
        Reason::SecretAccessDenied,
        format!(
            "the operator may not read the Secrets of namespace \"{namespace}\"; grant it with \
             `kubectl create rolebinding modelgate-operator -n {namespace} \
             --clusterrole=modelgate-operator-tenant --serviceaccount={subject}`"
        ),
    );
    let objects = resources
        .model_groups
        .iter()
        .map(|o| (ObjectKind::ModelGroup, o.meta()))
        .chain(
            resources
                .routing_policies
                .iter()
                .map(|o| (ObjectKind::RoutingPolicy, o.meta())),
        )
        .chain(
            resources
                .virtual_keys
                .iter()
                .map(|o| (ObjectKind::VirtualKey, o.meta())),
        );
    let reports: Vec<ObjectReport> = objects
        .map(|(kind, meta)| ObjectReport {
            kind,
            namespace: namespace.to_owned(),
            name: meta.name.clone().unwrap_or_default(),
            generation: meta.generation,
            outcome: Err(rejection.clone()),
            warnings: Vec::new(),
        })
        .collect();
    let config = CompiledConfig::empty();
    for report in &reports {
        let mut spend = Vec::new();
        let written = write_status(ctx, &resources, &config, ("", None), report, &mut spend);
        if let Err(error) = written.await {
            tracing::warn!(namespace, name = %report.name, %error, "status write failed");
        }
    }
    Err(ReconcileError::SecretAccessDenied)
}

async fn write_status(
    ctx: &Context,
    resources: &Resources,
    config: &CompiledConfig,
    published: (&str, Option<&ServedSummary>),
    report: &ObjectReport,
    spend: &mut Vec<ScopeSpendRow>,
) -> Result<bool, ReconcileError> {
    let written = match report.kind {
        ObjectKind::ModelGroup => {
            let Some(object) = find(&resources.model_groups, report) else {
                return Ok(false);
            };
            let id = format!("{}/{}", report.namespace, report.name);
            let mut extra = Map::new();
            if let Some(group) = config.model_groups.get(&id) {
                extra.insert("deployments".to_owned(), json!(group.deployments.len()));
                let tags = group.served_tags();
                if !tags.is_empty() {
                    extra.insert("tags".to_owned(), json!(tags));
                }
                extra.insert(
                    "deploymentDetails".to_owned(),
                    json!(group.deployment_statuses()),
                );
            }
            status::apply(&ctx.client, &ctx.recorder, object, report, published, extra).await?
        }
        ObjectKind::RoutingPolicy => {
            let Some(object) = find(&resources.routing_policies, report) else {
                return Ok(false);
            };
            let org = resources.org_of(&report.namespace);
            let extra = policy_spend_fields(ctx, object, org, spend).await;
            status::apply(&ctx.client, &ctx.recorder, object, report, published, extra).await?
        }
        ObjectKind::VirtualKey => {
            let Some(object) = find(&resources.virtual_keys, report) else {
                return Ok(false);
            };
            let mut extra = spend_fields(ctx, object, spend).await;
            extra.insert("org".to_owned(), json!(resources.org_of(&report.namespace)));
            status::apply(&ctx.client, &ctx.recorder, object, report, published, extra).await?
        }
    };
    if written {
        ctx.metrics.status_written(report.kind.as_str());
    }
    Ok(written)
}

/// A key's spend (and what is left of its budget), when a state store is configured. If the
/// store cannot be read, the last reported values are kept rather than cleared. The spend is
/// also added to `rows` for the metrics.
async fn spend_fields(
    ctx: &Context,
    key: &VirtualKey,
    rows: &mut Vec<ScopeSpendRow>,
) -> Map<String, serde_json::Value> {
    let Some(reader) = &ctx.spend else {
        return Map::new();
    };
    let budget_usd = key.spec.budget.as_ref().map(|b| b.limit);
    let fields = match reader.read(key).await {
        Ok(spend) => spend.status_fields(),
        Err(error) => {
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
    };
    if let Some(spend_usd) = fields.get("spend").and_then(serde_json::Value::as_f64) {
        rows.push(ScopeSpendRow {
            scope: "key",
            name: key.name_any(),
            spend_usd,
            budget_usd,
        });
    }
    fields
}

/// The spend of each org and team a policy selects, when a state store is configured; the last
/// reported values are kept when it cannot be read. Each is also added to `rows`.
async fn policy_spend_fields(
    ctx: &Context,
    policy: &RoutingPolicy,
    org: &str,
    rows: &mut Vec<ScopeSpendRow>,
) -> Map<String, serde_json::Value> {
    let Some(reader) = &ctx.spend else {
        return Map::new();
    };
    let spend = match reader.read_policy(policy, org).await {
        Ok(spend) => spend,
        Err(error) => {
            tracing::warn!(%error, name = %policy.name_any(), "cannot read spend from the state store");
            policy
                .status
                .as_ref()
                .map(|status| status.spend.clone())
                .unwrap_or_default()
        }
    };
    // The policy's budget applies to each org and team it selects, separately.
    let budget_usd = policy
        .spec
        .limits
        .as_ref()
        .and_then(|limits| limits.budget.as_ref())
        .map(|budget| budget.limit);
    rows.extend(spend.iter().map(|scope| ScopeSpendRow {
        scope: if scope.scope == "org" { "org" } else { "team" },
        name: scope.name.clone(),
        spend_usd: scope.spend,
        budget_usd,
    }));
    let mut fields = Map::new();
    if !spend.is_empty() {
        fields.insert("spend".to_owned(), json!(spend));
    }
    fields
}

fn find<'a, K: ResourceExt>(objects: &'a [K], report: &ObjectReport) -> Option<&'a K> {
    objects.iter().find(|o| o.name_any() == report.name)
}
