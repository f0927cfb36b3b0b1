//! The routing part of a decision record: every input a plan was derived from (candidate
//! signals, scores, seed, parameters) and the choices made, in a form `explain` can replay.
//!
//! In memory a group's candidates refer to its deployments by index into an id table shared with
//! the snapshot (recording costs no string copies); on the wire every candidate names its
//! deployment.

use std::sync::Arc;

use modelgate_crds::{common::Strategy, routing_policy::AutoMode};
use serde::{Deserialize, Serialize};

use super::strategy::{CandidateSignals, Params};

/// Why a candidate is not in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exclusion {
    /// It lacks a required capability tag.
    Tags,
    /// It is at its declared RPM/TPM (usage-based).
    Limit,
    /// It has no price, and the caller has a budget its policy does not let it spend on
    /// unpriced calls.
    Unpriced,
    /// The request (estimated prompt plus `max_tokens`) does not fit its context window.
    #[serde(rename = "context-window")]
    ContextWindow,
}

impl Exclusion {
    /// Whether the candidate was left out before ranking (rather than by the strategy).
    pub fn before_ranking(self) -> bool {
        matches!(self, Self::Tags | Self::Unpriced | Self::ContextWindow)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingRecord {
    pub seed: u64,
    pub params: Params,
    /// The capability tags every candidate had to carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitRecord>,
    /// Each group of the plan, in the order it was ranked.
    pub groups: Vec<GroupRecord>,
}

/// One group's ranking. Candidate `i` is deployment `ids[i]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "GroupWire", try_from = "GroupWire")]
pub struct GroupRecord {
    pub group: Arc<str>,
    pub strategy: Strategy,
    /// The group's deployment ids, shared with the snapshot.
    pub ids: Arc<[Arc<str>]>,
    pub candidates: Vec<CandidateRecord>,
    /// Candidate indexes in the order they go into the plan.
    pub order: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CandidateRecord {
    pub signals: CandidateSignals,
    pub score: Option<f64>,
    pub excluded: Option<Exclusion>,
}

#[derive(Serialize, Deserialize)]
struct GroupWire {
    group: Arc<str>,
    strategy: Strategy,
    candidates: Vec<CandidateWire>,
    order: Vec<Arc<str>>,
}

#[derive(Serialize, Deserialize)]
struct CandidateWire {
    deployment: Arc<str>,
    #[serde(flatten)]
    signals: CandidateSignals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    excluded: Option<Exclusion>,
}

impl From<GroupRecord> for GroupWire {
    fn from(record: GroupRecord) -> Self {
        let order = record
            .order
            .iter()
            .map(|&i| record.ids[i].clone())
            .collect();
        let candidates = record
            .candidates
            .into_iter()
            .zip(record.ids.iter())
            .map(|(c, id)| CandidateWire {
                deployment: id.clone(),
                signals: c.signals,
                score: c.score,
                excluded: c.excluded,
            })
            .collect();
        Self {
            group: record.group,
            strategy: record.strategy,
            candidates,
            order,
        }
    }
}

impl TryFrom<GroupWire> for GroupRecord {
    type Error = String;

    fn try_from(wire: GroupWire) -> Result<Self, String> {
        let ids: Arc<[Arc<str>]> = wire
            .candidates
            .iter()
            .map(|c| c.deployment.clone())
            .collect();
        let order = wire
            .order
            .iter()
            .map(|id| {
                ids.iter()
                    .position(|known| known == id)
                    .ok_or_else(|| format!("order names {id}, which is not a candidate"))
            })
            .collect::<Result<_, _>>()?;
        let candidates = wire
            .candidates
            .into_iter()
            .map(|c| CandidateRecord {
                signals: c.signals,
                score: c.score,
                excluded: c.excluded,
            })
            .collect();
        Ok(Self {
            group: wire.group,
            strategy: wire.strategy,
            ids,
            candidates,
            order,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoRecord {
    pub name: String,
    pub mode: AutoMode,
    pub candidates: Vec<AutoCandidate>,
    /// Group ids, best first.
    pub order: Vec<Arc<str>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoCandidate {
    pub group: Arc<str>,
    pub quality: u32,
    /// Best expected cost (cheapest, quality-first) or latency (fastest); none when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub model: String,
    /// (group id, weight) per arm.
    pub arms: Vec<(Arc<str>, u32)>,
    pub sticky: bool,
    /// The point in [0, total weight) that picked the arm.
    pub bucket: u64,
    pub arm: Arc<str>,
}

/// `auto`'s group order: a stable sort, so ties keep the policy's order and no randomness is
/// involved. Unknown costs sort last; unknown latency counts as fastest (it gets measured).
pub fn auto_order(mode: AutoMode, candidates: &[AutoCandidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    let cost = |i: usize| candidates[i].score.unwrap_or(f64::INFINITY);
    match mode {
        AutoMode::Cheapest => order.sort_by(|&a, &b| cost(a).total_cmp(&cost(b))),
        AutoMode::Fastest => order.sort_by(|&a, &b| {
            let latency = |i: usize| candidates[i].score.unwrap_or(0.0);
            latency(a).total_cmp(&latency(b))
        }),
        AutoMode::QualityFirst => order.sort_by(|&a, &b| {
            candidates[b]
                .quality
                .cmp(&candidates[a].quality)
                .then(cost(a).total_cmp(&cost(b)))
        }),
    }
    order
}

/// The arm whose cumulative weight range holds `bucket`.
pub fn arm_for(weights: &[u32], bucket: u64) -> usize {
    let mut upper = 0u64;
    for (i, w) in weights.iter().enumerate() {
        upper += u64::from(*w);
        if bucket < upper {
            return i;
        }
    }
    weights.len().saturating_sub(1)
}
