//! Routing: (snapshot, caller, request, live signals, seed) -> an ordered [`Plan`] and the
//! [`RoutingRecord`] that explains it. Pure given its inputs: the signals are read once into the
//! record, and every random choice comes from one rng seeded by the recorded seed, so `explain`
//! can re-derive the plan.
//!
//! The model name is resolved in this order: the caller's policy's `auto` model, then its traffic
//! splits, then the ModelGroups. The plan is the entry group(s), each followed by its fallbacks
//! depth first (each group once), every group ranked by its strategy and filtered by tags.

pub mod explain;
mod record;
pub mod strategy;
pub mod tags;

use modelgate_crds::{common::Strategy, routing_policy::AutoMode};
use sha2::{Digest, Sha256};

use crate::{
    config::{GroupId, KeyEntry, Policy, Snapshot, TagRequirement},
    error::ApiError,
};

pub use record::{AutoRecord, CandidateRecord, Exclusion, GroupRecord, RoutingRecord, SplitRecord};
use strategy::{CandidateSignals, Params, rank};

/// Output tokens assumed for cost estimates when neither the request nor the group says.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 256;

/// One deployment to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedAttempt {
    pub group: GroupId,
    pub deployment: usize,
}

/// The ordered attempts for one request.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub attempts: Vec<PlannedAttempt>,
    /// The links a request goes on to when a provider finds it too long for its context
    /// window: the entry group's context-window fallbacks (and theirs), ranked as usual.
    pub wider: Option<Box<Plan>>,
}

impl Plan {
    /// Every link the request may reach, the wider plan's included.
    pub fn every_link(&self) -> impl Iterator<Item = &PlannedAttempt> {
        self.attempts
            .iter()
            .chain(self.wider.iter().flat_map(|w| w.attempts.iter()))
    }
}

/// What routing needs to know about one request.
#[derive(Clone, Copy)]
pub struct RouteInput<'a> {
    pub model: &'a str,
    /// The capability tags every candidate must carry (sorted).
    pub tags: &'a [String],
    /// Whether the caller named tags itself (only allowed where the policy allows it).
    pub explicit_tags: bool,
    pub strategy_override: Option<Strategy>,
    pub fallbacks: bool,
    pub stream: bool,
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// The request's `max_tokens` / `max_completion_tokens`.
    pub max_tokens: Option<u64>,
    /// Only deployments with a price may serve (the caller has a budget to protect).
    pub priced_only: bool,
    pub seed: u64,
}

/// A routed request.
pub struct Routed {
    /// The group the client's model resolved to (the first entry group).
    pub group: GroupId,
    pub plan: Plan,
    pub record: RoutingRecord,
    /// How the plan's wider links were ranked (logged only when they are used).
    pub wider_record: Option<RoutingRecord>,
    /// The request fits no context window of its own links, so the plan starts at the wider
    /// ones: no call is made (and paid for) only to be told the request is too long.
    pub widened: bool,
}

impl RouteInput<'_> {
    /// Tokens the request needs a context window to hold: the estimated prompt and the answer
    /// it asks room for.
    pub fn context_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_add(self.max_tokens.unwrap_or(0))
    }
}

pub fn route(
    snapshot: &Snapshot,
    key: &KeyEntry,
    input: &RouteInput<'_>,
) -> Result<Routed, ApiError> {
    let policy = key.policy.as_deref();
    if input.strategy_override.is_some() && !policy.is_some_and(|p| p.spec.allow_strategy_override)
    {
        return Err(ApiError::override_not_allowed("x-modelgate-strategy"));
    }
    if input.explicit_tags && !policy.is_none_or(|p| p.spec.allow_tag_override) {
        return Err(ApiError::override_not_allowed("modelgate.tags"));
    }
    let (ctx, mut record, mut rng) = Ranker::new(snapshot, policy, input);

    let entries = if let Some(p) =
        policy.filter(|p| p.spec.auto.as_ref().is_some_and(|a| a.name == input.model))
    {
        let (entries, auto) = ctx.auto_entries(key, p)?;
        record.auto = Some(auto);
        entries
    } else if let Some((arms, sticky)) = policy.and_then(|p| p.splits.get(input.model)) {
        let (group, split) = split_arm(snapshot, key, input.model, arms, *sticky, &mut rng);
        record.split = Some(split);
        vec![group]
    } else {
        let group = key
            .resolve_model(input.model)
            .ok_or_else(|| ApiError::model_not_found(input.model))?;
        if !key.may_use(input.model, &snapshot.group(group).spec.name) {
            return Err(ApiError::model_not_allowed(input.model));
        }
        vec![group]
    };

    let mut plan = Plan::default();
    let mut visited = Vec::with_capacity(4);
    for &entry in &entries {
        ctx.push_group(entry, &mut visited, &mut plan, &mut record, &mut rng);
    }
    let (wider_plan, wider_record) = wider(snapshot, key, input, entries[0]).unzip();
    let excluded = |why: Exclusion| {
        record
            .groups
            .iter()
            .flat_map(|g| &g.candidates)
            .any(|c| c.excluded == Some(why))
    };
    if plan.attempts.is_empty() && excluded(Exclusion::ContextWindow) {
        return match wider_plan {
            Some(wider_plan) => Ok(Routed {
                group: entries[0],
                plan: wider_plan,
                record,
                wider_record,
                widened: true,
            }),
            None => Err(ApiError::context_window_exceeded(input.context_tokens())),
        };
    }
    if plan.attempts.is_empty() {
        return Err(if excluded(Exclusion::Tags) {
            ApiError::no_deployment_matches_tags(input.tags)
        } else if excluded(Exclusion::Unpriced) {
            ApiError::unpriced_deployment()
        } else if excluded(Exclusion::Limit) {
            ApiError::deployments_at_capacity()
        } else {
            ApiError::no_deployments()
        });
    }
    plan.wider = wider_plan.map(Box::new);
    Ok(Routed {
        group: entries[0],
        plan,
        record,
        wider_record,
        widened: false,
    })
}

/// The plan over `from`'s context-window fallbacks, for a request a provider finds too long for
/// `from`: each of those groups (and its fallbacks) ranked as usual. `None` when `from` has none
/// or none can serve the request's tags. The seed is the request's, turned, so both plans replay.
fn wider(
    snapshot: &Snapshot,
    key: &KeyEntry,
    input: &RouteInput<'_>,
    from: GroupId,
) -> Option<(Plan, RoutingRecord)> {
    let targets = &snapshot.group(from).context_fallbacks;
    if targets.is_empty() {
        return None;
    }
    let input = RouteInput {
        seed: input.seed.rotate_left(32),
        ..*input
    };
    let (ctx, mut record, mut rng) = Ranker::new(snapshot, key.policy.as_deref(), &input);
    let mut plan = Plan::default();
    let mut visited = vec![from];
    for &target in targets {
        ctx.push_group(target, &mut visited, &mut plan, &mut record, &mut rng);
    }
    (!plan.attempts.is_empty()).then_some((plan, record))
}

struct Ranker<'a> {
    snapshot: &'a Snapshot,
    policy: Option<&'a Policy>,
    input: &'a RouteInput<'a>,
    params: Params,
    required: TagRequirement<'a>,
    /// The signals' current minute, read once per decision.
    minute: std::cell::OnceCell<u64>,
}

impl<'a> Ranker<'a> {
    fn new(
        snapshot: &'a Snapshot,
        policy: Option<&'a Policy>,
        input: &'a RouteInput<'a>,
    ) -> (Self, RoutingRecord, fastrand::Rng) {
        let params = policy.map_or_else(Params::default, |p| Params {
            tolerance_percent: p.spec.latency_tolerance_percent,
            exploration_percent: p.spec.exploration_percent,
        });
        let record = RoutingRecord {
            seed: input.seed,
            params,
            tags: input.tags.to_vec(),
            ..RoutingRecord::default()
        };
        let ranker = Self {
            snapshot,
            policy,
            input,
            params,
            required: snapshot.tag_requirement(input.tags),
            minute: std::cell::OnceCell::new(),
        };
        (ranker, record, fastrand::Rng::with_seed(input.seed))
    }

    fn strategy_for(&self, group: GroupId) -> Strategy {
        self.input
            .strategy_override
            .or(self.snapshot.group(group).spec.strategy)
            .or(self.policy.and_then(|p| p.spec.strategy))
            .unwrap_or_default()
    }

    fn push_group(
        &self,
        group: GroupId,
        visited: &mut Vec<GroupId>,
        plan: &mut Plan,
        record: &mut RoutingRecord,
        rng: &mut fastrand::Rng,
    ) {
        if visited.contains(&group) {
            return;
        }
        visited.push(group);
        let g = self.snapshot.group(group);
        let strategy = self.strategy_for(group);
        let mut candidates = Vec::with_capacity(g.deployments.len());
        let mut eligible = Vec::with_capacity(g.deployments.len());
        let mut eligible_signals = Vec::with_capacity(g.deployments.len());
        for (index, deployment) in g.deployments.iter().enumerate() {
            let signals = self.signals(group, index);
            let excluded = if !deployment.serves(&self.required) {
                Some(Exclusion::Tags)
            } else if self.input.priced_only && deployment.hot.price.is_none() {
                Some(Exclusion::Unpriced)
            } else if deployment
                .hot
                .context_window
                .is_some_and(|window| self.input.context_tokens() > window)
            {
                Some(Exclusion::ContextWindow)
            } else {
                eligible.push(index);
                eligible_signals.push(signals.clone());
                None
            };
            candidates.push(CandidateRecord {
                signals,
                score: None,
                excluded,
            });
        }
        let ranking = rank(strategy, self.params, &eligible_signals, rng);
        for (i, score) in ranking.scores.iter().enumerate() {
            candidates[eligible[i]].score = *score;
        }
        for &i in &ranking.skipped {
            candidates[eligible[i]].excluded = Some(Exclusion::Limit);
        }
        let order: Vec<usize> = ranking.order.iter().map(|&i| eligible[i]).collect();
        plan.attempts.extend(
            order
                .iter()
                .map(|&deployment| PlannedAttempt { group, deployment }),
        );
        record.groups.push(GroupRecord {
            group: g.id.clone(),
            strategy,
            ids: g.deployment_ids.clone(),
            candidates,
            order,
        });
        if self.input.fallbacks {
            for &fallback in &g.fallbacks {
                self.push_group(fallback, visited, plan, record, rng);
            }
        }
    }

    /// The live signals of one deployment, as this request sees them.
    fn signals(&self, group: GroupId, index: usize) -> CandidateSignals {
        let g = self.snapshot.group(group);
        let d = &g.deployments[index];
        let live = d
            .signals
            .values_at(*self.minute.get_or_init(|| d.signals.minute()));
        let latency_ms = if self.input.stream {
            live.ttft_ms.or(live.per_token_ms)
        } else {
            live.per_token_ms.or(live.ttft_ms)
        };
        let output = self
            .input
            .max_tokens
            .or(g.spec.default_max_tokens.map(u64::from))
            .unwrap_or(DEFAULT_OUTPUT_TOKENS);
        let cost_usd = d
            .hot
            .price
            .map(|price| price.estimate_usd(self.input.prompt_tokens, output));
        CandidateSignals {
            weight: d.hot.weight,
            in_flight: live.in_flight,
            rpm_used: live.rpm_used,
            tpm_used: live.tpm_used,
            rpm_limit: d.hot.rpm,
            tpm_limit: d.hot.tpm,
            latency_ms,
            cost_usd,
        }
    }

    /// `auto`: the policy's groups the key may use and that can serve the tags, best first.
    fn auto_entries(
        &self,
        key: &KeyEntry,
        policy: &Policy,
    ) -> Result<(Vec<GroupId>, AutoRecord), ApiError> {
        let auto = policy.spec.auto.as_ref().ok_or_else(ApiError::internal)?;
        let allowed: Vec<GroupId> = policy
            .auto_groups
            .iter()
            .copied()
            .filter(|&g| {
                let spec = &self.snapshot.group(g).spec;
                key.may_use(&spec.name, &spec.name)
                    || spec.models.iter().any(|m| key.may_use(m, &spec.name))
            })
            .collect();
        if allowed.is_empty() {
            return Err(ApiError::model_not_allowed(&auto.name));
        }
        let usable: Vec<GroupId> = allowed
            .into_iter()
            .filter(|&g| {
                self.snapshot
                    .group(g)
                    .deployments
                    .iter()
                    .any(|d| d.serves(&self.required))
            })
            .collect();
        if usable.is_empty() {
            return Err(ApiError::no_deployment_matches_tags(self.input.tags));
        }
        let ranking: Vec<record::AutoCandidate> = usable
            .iter()
            .map(|&g| record::AutoCandidate {
                group: self.snapshot.group(g).id.clone(),
                quality: self.snapshot.group(g).spec.quality.unwrap_or(0),
                score: self.group_score(g, auto.mode),
            })
            .collect();
        let order = record::auto_order(auto.mode, &ranking);
        let entries = order.iter().map(|&i| usable[i]).collect();
        let record = AutoRecord {
            name: auto.name.clone(),
            mode: auto.mode,
            order: order.iter().map(|&i| ranking[i].group.clone()).collect(),
            candidates: ranking,
        };
        Ok((entries, record))
    }

    /// The best expected cost (cheapest, quality-first) or latency (fastest) among a group's
    /// deployments that can serve the request.
    fn group_score(&self, group: GroupId, mode: AutoMode) -> Option<f64> {
        let g = self.snapshot.group(group);
        (0..g.deployments.len())
            .filter(|&i| g.deployments[i].serves(&self.required))
            .filter_map(|i| {
                let s = self.signals(group, i);
                match mode {
                    AutoMode::Fastest => Some(s.latency_ms.unwrap_or(0.0)),
                    AutoMode::Cheapest | AutoMode::QualityFirst => s.cost_usd,
                }
            })
            .min_by(f64::total_cmp)
    }
}

/// Picks a split arm: by a hash of the key (sticky) or by the request's rng.
fn split_arm(
    snapshot: &Snapshot,
    key: &KeyEntry,
    model: &str,
    arms: &[(GroupId, u32)],
    sticky: bool,
    rng: &mut fastrand::Rng,
) -> (GroupId, SplitRecord) {
    let total: u64 = arms.iter().map(|(_, w)| u64::from(*w)).sum::<u64>().max(1);
    let bucket = if sticky {
        let digest = Sha256::new()
            .chain_update(key.hash)
            .chain_update(model.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first) % total
    } else {
        rng.u64(..total)
    };
    let weights: Vec<u32> = arms.iter().map(|(_, w)| *w).collect();
    let arm = record::arm_for(&weights, bucket);
    let group = arms[arm].0;
    let record = SplitRecord {
        model: model.to_owned(),
        arms: arms
            .iter()
            .map(|(g, w)| (snapshot.group(*g).id.clone(), *w))
            .collect(),
        sticky,
        bucket,
        arm: snapshot.group(group).id.clone(),
    };
    (group, record)
}
