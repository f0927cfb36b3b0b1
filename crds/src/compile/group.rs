//! ModelGroup compilation: per-object checks, then the cross-object rules (model names claimed
//! twice, unknown fallback targets, fallback cycles), iterated until nothing else falls out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    catalog,
    common::SecretKeySelector,
    compiled::{CompiledAws, CompiledDeployment, CompiledMock, CompiledModelGroup, Sensitive},
    credentials::{CredentialRefs, credential_ref},
    model_group::{Deployment, ModelGroup, ProviderKind},
    report::{Reason, Rejection},
};

use super::{
    Compiled, ObjectRef, SecretIndex, SecretUse, compile_timeouts, duration_ms, precedence,
    upstream::{Pin, check_url, token_host},
};

/// What compiling the groups needs besides the groups.
pub(crate) struct GroupContext<'a> {
    pub secrets: &'a SecretIndex<'a>,
    pub resources: &'a super::Resources,
    /// List prices are the ones in effect now.
    pub now: jiff::Timestamp,
}

const DEFAULT_MOCK_DIMENSIONS: u32 = 8;

pub(crate) fn compile_all(
    groups: &[ModelGroup],
    context: &GroupContext<'_>,
) -> Compiled<CompiledModelGroup> {
    let mut ordered: Vec<&ModelGroup> = groups.iter().collect();
    ordered.sort_by_key(|g| precedence(*g));

    let mut candidates: BTreeMap<String, CompiledModelGroup> = BTreeMap::new();
    let mut rejected: BTreeMap<String, Rejection> = BTreeMap::new();
    let mut claimed: HashMap<(String, String), String> = HashMap::new();
    let mut refs = Vec::new();

    for group in ordered {
        let object = ObjectRef::of(group);
        let id = object.id();
        let outcome = compile_one(&object, group, context).and_then(|compiled| {
            claim_models(&object, &compiled.models, &mut claimed)?;
            Ok(compiled)
        });
        match outcome {
            Ok(compiled) => {
                candidates.insert(id, compiled);
            }
            Err(rejection) => {
                rejected.insert(id, rejection);
            }
        }
        refs.push(object);
    }

    reject_broken_fallbacks(&mut candidates, &mut rejected);

    let outcomes = refs
        .into_iter()
        .map(|object| {
            let outcome = match rejected.get(&object.id()) {
                Some(r) => Err(r.clone()),
                None => Ok(()),
            };
            (object, outcome)
        })
        .collect();
    let warnings = unpriced(&candidates);
    Compiled {
        accepted: candidates,
        outcomes,
        warnings,
    }
}

/// Every accepted deployment with no price: neither its own `pricing` nor a list price.
fn unpriced(groups: &BTreeMap<String, CompiledModelGroup>) -> Vec<(String, Rejection)> {
    groups
        .iter()
        .flat_map(|(id, group)| group.deployments.iter().map(move |d| (id, d)))
        .filter(|(_, d)| d.pricing.is_none() && d.list_price().is_none())
        .map(|(id, d)| {
            (
                id.clone(),
                Rejection::new(
                    Reason::UnpricedDeployment,
                    format!(
                        "deployments[{}] has no pricing and the catalog has no list price for {:?}: \
                         budgeted keys cannot call it unless their RoutingPolicy sets \
                         allowUnpriced",
                        d.name, d.model
                    ),
                ),
            )
        })
        .collect()
}

fn compile_one(
    object: &ObjectRef,
    group: &ModelGroup,
    context: &GroupContext<'_>,
) -> Result<CompiledModelGroup, Rejection> {
    let spec = &group.spec;
    if spec.models.is_empty() {
        return Err(Rejection::new(
            Reason::InvalidSpec,
            "spec.models must name at least one model",
        ));
    }
    if spec.deployments.is_empty() {
        return Err(Rejection::new(
            Reason::InvalidSpec,
            "spec.deployments must list at least one deployment",
        ));
    }
    let mut seen = BTreeSet::new();
    for d in &spec.deployments {
        if !seen.insert(d.name.as_str()) {
            return Err(Rejection::new(
                Reason::DuplicateDeployment,
                format!("deployment name \"{}\" is used more than once", d.name),
            ));
        }
    }
    if spec.fallbacks.contains(&object.name) {
        return Err(Rejection::new(
            Reason::FallbackCycle,
            format!("fallback cycle: {0} -> {0}", object.name),
        ));
    }
    let deployments = spec
        .deployments
        .iter()
        .map(|d| compile_deployment(object, d, context))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CompiledModelGroup {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        models: dedup(&spec.models),
        tags: dedup(&spec.tags),
        strategy: spec.strategy,
        context_window_fallbacks: spec
            .context_window_fallbacks
            .iter()
            .map(|f| format!("{}/{f}", object.namespace))
            .collect(),
        quality: spec.quality,
        default_max_tokens: spec.default_max_tokens,
        fallbacks: spec
            .fallbacks
            .iter()
            .map(|f| format!("{}/{f}", object.namespace))
            .collect(),
        deployments,
    })
}

fn compile_deployment(
    object: &ObjectRef,
    d: &Deployment,
    context: &GroupContext<'_>,
) -> Result<CompiledDeployment, Rejection> {
    let field = format!("deployments[{}]", d.name);
    if d.model.trim().is_empty() {
        return Err(Rejection::new(
            Reason::InvalidSpec,
            format!("{field}.model must not be empty"),
        ));
    }
    let allow_loopback = context.resources.allows_loopback(&object.namespace);
    let upstream = d
        .base_url
        .as_deref()
        .map(|u| check_url(u, &field, allow_loopback))
        .transpose()?;
    if upstream.is_none()
        && matches!(
            d.provider,
            ProviderKind::OpenaiCompatible | ProviderKind::Azure
        )
    {
        return Err(Rejection::new(
            Reason::InvalidUrl,
            format!(
                "{field}.baseUrl is required for provider {}",
                d.provider.as_str()
            ),
        ));
    }
    check_pricing(d, &field)?;
    check_provider_settings(d, &field)?;
    let credentials = Credentials::resolve(object, d, &field, context.secrets)?;
    credentials.pin(d, upstream.as_ref().map(|u| u.host.as_str()))?;
    let mock = match d.provider {
        ProviderKind::Mock => {
            let settings = d.mock.clone().unwrap_or_default();
            Some(CompiledMock {
                latency_ms: duration_ms(
                    settings.latency.as_ref(),
                    &format!("{field}.mock.latency"),
                )?
                .unwrap_or(0),
                embedding_dimensions: settings
                    .embedding_dimensions
                    .unwrap_or(DEFAULT_MOCK_DIMENSIONS),
            })
        }
        _ => None,
    };
    let catalog = catalog::lookup(
        d.provider,
        &d.model,
        upstream.as_ref().map(|u| u.url.as_str()),
        context.now,
    );
    let catalog_tags =
        d.tags.is_empty() && catalog.as_ref().is_some_and(|c| !c.capabilities.is_empty());
    let tags = match &catalog {
        Some(entry) if catalog_tags => entry.capabilities.clone(),
        _ => dedup(&d.tags),
    };
    Ok(CompiledDeployment {
        id: format!("{}/{}/{}", object.namespace, object.name, d.name),
        name: d.name.clone(),
        provider: d.provider,
        model: d.model.clone(),
        base_url: upstream.map(|u| u.url),
        allow_loopback,
        credential_refs: credential_refs(d),
        api_key: credentials.api_key.map(|(value, _)| value),
        aws: credentials.aws.map(|(aws, _)| aws),
        region: d.region.clone(),
        project: d.project.clone(),
        api_version: d.api_version.clone(),
        weight: d.weight.unwrap_or(1),
        rpm: d.rpm,
        tpm: d.tpm,
        tags,
        catalog_tags,
        context_window: d.context_window,
        pricing: d.pricing.clone(),
        catalog,
        timeouts: compile_timeouts(d.timeouts.as_ref(), &format!("{field}.timeouts"))?,
        mock,
    })
}

/// The `secret/key` of each credential a deployment names.
fn credential_refs(d: &Deployment) -> Option<CredentialRefs> {
    let credentials = d.credentials.as_ref()?;
    let name = |s: &SecretKeySelector| credential_ref(&s.name, &s.key);
    let aws = credentials.aws.as_ref();
    Some(CredentialRefs {
        api_key: credentials.secret_key_ref.as_ref().map(name),
        aws_access_key_id: aws.map(|a| name(&a.access_key_id_ref)),
        aws_secret_access_key: aws.map(|a| name(&a.secret_access_key_ref)),
        aws_session_token: aws.and_then(|a| a.session_token_ref.as_ref().map(name)),
    })
}

fn check_pricing(d: &Deployment, field: &str) -> Result<(), Rejection> {
    if let Some(p) = &d.pricing {
        let prices = [
            ("input", Some(p.input)),
            ("output", Some(p.output)),
            ("cachedInput", p.cached_input),
        ];
        for (name, value) in prices {
            if let Some(v) = value
                && (!v.is_finite() || v < 0.0)
            {
                return Err(Rejection::new(
                    Reason::InvalidPricing,
                    format!("{field}.pricing.{name} must be a non-negative number, got {v}"),
                ));
            }
        }
    }
    Ok(())
}

/// A deployment's credentials, resolved, each with the Secret it came from and the hosts that
/// Secret allows.
struct Credentials<'f> {
    field: &'f str,
    api_key: Option<(Sensitive, Source)>,
    aws: Option<(CompiledAws, Source)>,
}

/// Where a credential came from.
struct Source {
    secret: String,
    allowed_hosts: Vec<String>,
}

impl<'f> Credentials<'f> {
    fn resolve(
        object: &ObjectRef,
        d: &Deployment,
        field: &'f str,
        secrets: &SecretIndex<'_>,
    ) -> Result<Self, Rejection> {
        let resolve = |selector: &SecretKeySelector, name: &str| {
            secrets
                .resolve(
                    &object.namespace,
                    selector,
                    &format!("{field}.credentials.{name}"),
                    SecretUse::Credential,
                )
                .map(|resolved| {
                    let source = Source {
                        secret: selector.name.clone(),
                        allowed_hosts: resolved.allowed_hosts,
                    };
                    (Sensitive::new(resolved.value.trim()), source)
                })
        };
        let credentials = d.credentials.as_ref();
        let api_key = credentials
            .and_then(|c| c.secret_key_ref.as_ref())
            .map(|selector| resolve(selector, "secretKeyRef"))
            .transpose()?;
        let aws = credentials
            .and_then(|c| c.aws.as_ref())
            .map(|aws| {
                let (access_key_id, source) =
                    resolve(&aws.access_key_id_ref, "aws.accessKeyIdRef")?;
                let (secret_access_key, secret_source) =
                    resolve(&aws.secret_access_key_ref, "aws.secretAccessKeyRef")?;
                let session_token = aws
                    .session_token_ref
                    .as_ref()
                    .map(|s| resolve(s, "aws.sessionTokenRef"))
                    .transpose()?;
                // Every Secret involved must allow the host: pin to the strictest.
                let mut allowed = source.allowed_hosts;
                allowed.retain(|h| secret_source.allowed_hosts.contains(h));
                if let Some((_, token_source)) = &session_token {
                    allowed.retain(|h| token_source.allowed_hosts.contains(h));
                }
                Ok::<_, Rejection>((
                    CompiledAws {
                        access_key_id,
                        secret_access_key,
                        session_token: session_token.map(|(token, _)| token),
                    },
                    Source {
                        secret: source.secret,
                        allowed_hosts: allowed,
                    },
                ))
            })
            .transpose()?;
        Ok(Self {
            field,
            api_key,
            aws,
        })
    }

    /// Refuses a credential bound for a host its Secret does not allow: the `baseUrl`'s, and for
    /// a Vertex service account the host its key sends assertions to.
    fn pin(&self, d: &Deployment, base_host: Option<&str>) -> Result<(), Rejection> {
        let sources = self
            .api_key
            .iter()
            .map(|(value, source)| (Some(value), source))
            .chain(self.aws.iter().map(|(_, source)| (None, source)));
        for (value, source) in sources {
            let pin = Pin {
                provider: d.provider,
                region: d.region.as_deref(),
                allowed: &source.allowed_hosts,
                secret: &source.secret,
                field: self.field,
            };
            if let Some(host) = base_host {
                pin.check(host, "baseUrl")?;
            }
            if d.provider == ProviderKind::Vertex
                && let Some(host) = value.and_then(|v| token_host(v.expose()))
            {
                pin.check(&host, "token_uri")?;
            }
        }
        Ok(())
    }
}

/// The settings a provider cannot work without, and the ones it cannot use (the CRD's CEL rules
/// say the same; standalone files are only checked here).
fn check_provider_settings(d: &Deployment, field: &str) -> Result<(), Rejection> {
    let invalid = |message: String| Err(Rejection::new(Reason::InvalidSpec, message));
    let provider = d.provider.as_str();
    if d.provider == ProviderKind::Bedrock && d.region.is_none() {
        return invalid(format!("{field}.region is required for provider bedrock"));
    }
    if d.provider == ProviderKind::Vertex && (d.region.is_none() || d.project.is_none()) {
        return invalid(format!(
            "{field}.project and {field}.region are required for provider vertex"
        ));
    }
    if let Some(c) = &d.credentials {
        if c.secret_key_ref.is_some() == c.aws.is_some() {
            return invalid(format!(
                "{field}.credentials takes exactly one of secretKeyRef and aws"
            ));
        }
        if c.aws.is_some() && d.provider != ProviderKind::Bedrock {
            return invalid(format!(
                "{field}.credentials.aws is for bedrock deployments, not {provider}"
            ));
        }
    }
    Ok(())
}

fn claim_models(
    object: &ObjectRef,
    models: &[String],
    claimed: &mut HashMap<(String, String), String>,
) -> Result<(), Rejection> {
    for model in models {
        if let Some(owner) = claimed.get(&(object.namespace.clone(), model.clone())) {
            return Err(Rejection::new(
                Reason::DuplicateModel,
                format!("model \"{model}\" is already served by ModelGroup \"{owner}\""),
            ));
        }
    }
    for model in models {
        claimed.insert(
            (object.namespace.clone(), model.clone()),
            object.name.clone(),
        );
    }
    Ok(())
}

/// Rejects groups whose fallbacks point at missing or rejected groups, and every group on a
/// fallback cycle; repeats, because each rejection can break another group's fallback.
fn reject_broken_fallbacks(
    candidates: &mut BTreeMap<String, CompiledModelGroup>,
    rejected: &mut BTreeMap<String, Rejection>,
) {
    loop {
        let mut newly: Vec<(String, Rejection)> = Vec::new();
        for (id, group) in candidates.iter() {
            if let Some(target) = group
                .fallbacks
                .iter()
                .chain(&group.context_window_fallbacks)
                .find(|f| !candidates.contains_key(*f))
            {
                let name = target.rsplit('/').next().unwrap_or(target);
                let message = match rejected.get(target) {
                    Some(r) => format!(
                        "fallback \"{name}\" is not usable: it was rejected ({})",
                        r.reason.as_str()
                    ),
                    None => format!(
                        "fallback \"{name}\" does not exist in namespace \"{}\"",
                        group.namespace
                    ),
                };
                newly.push((id.clone(), Rejection::new(Reason::UnknownFallback, message)));
            }
        }
        if newly.is_empty() {
            newly = find_cycles(candidates);
        }
        if newly.is_empty() {
            return;
        }
        for (id, rejection) in newly {
            candidates.remove(&id);
            rejected.insert(id, rejection);
        }
    }
}

/// Every group that lies on a fallback cycle, with the cycle spelled out.
fn find_cycles(groups: &BTreeMap<String, CompiledModelGroup>) -> Vec<(String, Rejection)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        id: &str,
        groups: &BTreeMap<String, CompiledModelGroup>,
        marks: &mut HashMap<String, Mark>,
        stack: &mut Vec<String>,
        found: &mut BTreeMap<String, Rejection>,
    ) {
        match marks.get(id) {
            Some(Mark::Done) => return,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|s| s == id).unwrap_or(0);
                let cycle: Vec<&str> = stack[start..]
                    .iter()
                    .map(|s| s.rsplit('/').next().unwrap_or(s))
                    .collect();
                let path = format!(
                    "{} -> {}",
                    cycle.join(" -> "),
                    cycle.first().copied().unwrap_or_default()
                );
                for member in &stack[start..] {
                    found.entry(member.clone()).or_insert_with(|| {
                        Rejection::new(Reason::FallbackCycle, format!("fallback cycle: {path}"))
                    });
                }
                return;
            }
            None => {}
        }
        marks.insert(id.to_owned(), Mark::Visiting);
        stack.push(id.to_owned());
        if let Some(group) = groups.get(id) {
            for next in &group.fallbacks {
                visit(next, groups, marks, stack, found);
            }
        }
        stack.pop();
        marks.insert(id.to_owned(), Mark::Done);
    }

    let mut marks = HashMap::new();
    let mut found = BTreeMap::new();
    for id in groups.keys() {
        visit(id, groups, &mut marks, &mut Vec::new(), &mut found);
    }
    found.into_iter().collect()
}

fn dedup(values: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    values
        .iter()
        .filter(|v| seen.insert(v.as_str()))
        .cloned()
        .collect()
}
