//! RoutingPolicy compilation: durations to milliseconds, and one policy per selector
//! (namespace default, org, team): a second claim on the same selector is a conflict.

use std::collections::BTreeMap;

use crate::{
    compiled::{
        CompiledAuto, CompiledBreaker, CompiledCache, CompiledModelGroup, CompiledPolicy,
        CompiledRetries, CompiledSplit,
    },
    report::{Reason, Rejection},
    routing_policy::RoutingPolicy,
};

use super::{Compiled, ObjectRef, compile_timeouts, duration_ms, precedence};

/// The model name of `auto` when the policy does not name it.
pub const DEFAULT_AUTO_NAME: &str = "auto";
/// Latency-based: deployments within this percentage of the fastest are shuffled together.
pub const DEFAULT_TOLERANCE_PERCENT: u32 = 10;
/// Latency-based: share of requests sent to a random deployment.
pub const DEFAULT_EXPLORATION_PERCENT: u32 = 5;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Selector {
    NamespaceDefault,
    Org(String),
    Team(String),
}

impl Selector {
    fn describe(&self) -> String {
        match self {
            Self::NamespaceDefault => "the namespace default".to_owned(),
            Self::Org(o) => format!("org \"{o}\""),
            Self::Team(t) => format!("team \"{t}\""),
        }
    }
}

pub(crate) fn compile_all(
    policies: &[RoutingPolicy],
    groups: &BTreeMap<String, CompiledModelGroup>,
) -> Compiled<CompiledPolicy> {
    let mut ordered: Vec<&RoutingPolicy> = policies.iter().collect();
    ordered.sort_by_key(|p| precedence(*p));

    let mut accepted = BTreeMap::new();
    let mut claimed: BTreeMap<(String, Selector), String> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for policy in ordered {
        let object = ObjectRef::of(policy);
        let outcome = compile_one(&object, policy, groups).and_then(|compiled| {
            let selectors = selectors(&compiled);
            if let Some((selector, owner)) = selectors.iter().find_map(|s| {
                claimed
                    .get(&(object.namespace.clone(), s.clone()))
                    .map(|o| (s, o))
            }) {
                return Err(Rejection::new(
                    Reason::PolicyConflict,
                    format!(
                        "{} is already selected by RoutingPolicy \"{owner}\"",
                        selector.describe()
                    ),
                ));
            }
            for s in selectors {
                claimed.insert((object.namespace.clone(), s), object.name.clone());
            }
            accepted.insert(object.id(), compiled);
            Ok(())
        });
        outcomes.push((object, outcome));
    }
    Compiled {
        accepted,
        outcomes,
        warnings: Vec::new(),
    }
}

fn selectors(policy: &CompiledPolicy) -> Vec<Selector> {
    if policy.orgs.is_empty() && policy.teams.is_empty() {
        return vec![Selector::NamespaceDefault];
    }
    let orgs = policy.orgs.iter().cloned().map(Selector::Org);
    let teams = policy.teams.iter().cloned().map(Selector::Team);
    orgs.chain(teams).collect()
}

fn compile_one(
    object: &ObjectRef,
    policy: &RoutingPolicy,
    groups: &BTreeMap<String, CompiledModelGroup>,
) -> Result<CompiledPolicy, Rejection> {
    let spec = &policy.spec;
    let retries = spec.retries.clone().unwrap_or_default();
    let breaker = spec.circuit_breaker.clone().unwrap_or_default();
    let cache = spec.cache.clone().unwrap_or_default();
    if cache.scope == Some(crate::routing_policy::CacheScope::Group) && cache.share_group.is_none()
    {
        return Err(Rejection::new(
            Reason::InvalidSpec,
            "spec.cache.shareGroup is required with scope group",
        ));
    }
    if let Some(twice) = spec
        .spend_tags
        .iter()
        .enumerate()
        .find(|(i, tag)| spec.spend_tags[..*i].iter().any(|t| t.key == tag.key))
    {
        return Err(Rejection::new(
            Reason::InvalidSpec,
            format!("spec.spendTags: the key \"{}\" is given twice", twice.1.key),
        ));
    }
    let limits = spec.limits.clone().unwrap_or_default();
    if let Some(budget) = &limits.budget
        && (!budget.limit.is_finite() || budget.limit <= 0.0)
    {
        return Err(Rejection::new(
            Reason::InvalidSpec,
            "spec.limits.budget.limit must be greater than 0",
        ));
    }
    let group_id = |name: &str, field: &str| {
        let id = format!("{}/{name}", object.namespace);
        if groups.contains_key(&id) {
            Ok(id)
        } else {
            Err(Rejection::new(
                Reason::UnknownGroup,
                format!("{field}: ModelGroup \"{name}\" does not exist or was rejected"),
            ))
        }
    };
    let auto = spec
        .auto
        .as_ref()
        .map(|auto| {
            let groups = auto
                .groups
                .iter()
                .map(|g| group_id(g, "spec.auto.groups"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, Rejection>(CompiledAuto {
                name: auto
                    .name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_AUTO_NAME.to_owned()),
                groups,
                mode: auto.mode,
            })
        })
        .transpose()?;
    let mut splits = BTreeMap::new();
    for split in &spec.splits {
        let arms = split
            .arms
            .iter()
            .map(|arm| Ok((group_id(&arm.group, "spec.splits.arms")?, arm.weight)))
            .collect::<Result<Vec<_>, Rejection>>()?;
        if arms.iter().all(|(_, w)| *w == 0) {
            return Err(Rejection::new(
                Reason::InvalidSpec,
                format!(
                    "spec.splits[{}]: at least one arm needs a weight above 0",
                    split.model
                ),
            ));
        }
        let compiled = CompiledSplit {
            arms,
            sticky: split.sticky,
        };
        if splits.insert(split.model.clone(), compiled).is_some() {
            return Err(Rejection::new(
                Reason::InvalidSpec,
                format!("spec.splits: model \"{}\" is split twice", split.model),
            ));
        }
    }
    if let Some(auto) = &auto
        && splits.contains_key(&auto.name)
    {
        return Err(Rejection::new(
            Reason::InvalidSpec,
            format!("\"{}\" is both the auto model and a split", auto.name),
        ));
    }
    let overrides = spec.overrides.clone().unwrap_or_default();
    let latency = spec.latency_based.clone().unwrap_or_default();
    Ok(CompiledPolicy {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        orgs: spec.orgs.clone(),
        teams: spec.teams.clone(),
        strategy: spec.strategy,
        retries: CompiledRetries {
            attempts: retries.attempts,
            backoff_base_ms: duration_ms(
                retries.backoff_base.as_ref(),
                "spec.retries.backoffBase",
            )?,
            backoff_max_ms: duration_ms(retries.backoff_max.as_ref(), "spec.retries.backoffMax")?,
            max_attempts: retries.max_attempts,
        },
        timeouts: compile_timeouts(spec.timeouts.as_ref(), "spec.timeouts")?,
        circuit_breaker: CompiledBreaker {
            consecutive_failures: breaker.consecutive_failures,
            cooldown_ms: duration_ms(breaker.cooldown.as_ref(), "spec.circuitBreaker.cooldown")?,
            max_cooldown_ms: duration_ms(
                breaker.max_cooldown.as_ref(),
                "spec.circuitBreaker.maxCooldown",
            )?,
            failure_rate_percent: breaker.failure_rate_percent,
            min_requests: breaker.min_requests,
        },
        cache: CompiledCache {
            enabled: cache.enabled.unwrap_or(true),
            ttl_ms: duration_ms(cache.ttl.as_ref(), "spec.cache.ttl")?,
            scope: cache.scope.unwrap_or_default(),
            share_group: cache.share_group,
            bypass_above_temperature: cache.bypass_above_temperature,
            hits_count_against_rpm: cache.hits_count_against_rpm.unwrap_or(true),
        },
        default_tags: spec.default_tags.clone(),
        budget: limits.budget,
        rpm: limits.rpm,
        tpm: limits.tpm,
        auto,
        splits,
        allow_strategy_override: overrides.strategy.unwrap_or(false),
        allow_tag_override: overrides.tags.unwrap_or(true),
        allow_unpriced: spec.allow_unpriced,
        latency_tolerance_percent: latency
            .tolerance_percent
            .unwrap_or(DEFAULT_TOLERANCE_PERCENT),
        exploration_percent: latency
            .exploration_percent
            .unwrap_or(DEFAULT_EXPLORATION_PERCENT),
        stream_commit: spec
            .streaming
            .as_ref()
            .and_then(|streaming| streaming.commit)
            .unwrap_or_default(),
        spend_tags: spec
            .spend_tags
            .iter()
            .map(|tag| (tag.key.clone(), tag.values.clone()))
            .collect(),
    })
}
