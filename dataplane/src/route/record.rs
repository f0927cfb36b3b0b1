//! The routing part of a decision record: every input a plan was derived from (candidate
//! signals, scores, seed, parameters) and the choices made, in a form `explain` can replay.

use modelgate_crds::{common::Strategy, routing_policy::AutoMode};
use serde::{Deserialize, Serialize};

use super::strategy::{CandidateSignals, Params};

/// A candidate left out because it lacks a required capability tag.
pub const EXCLUDED_TAGS: &str = "tags";
/// A candidate left out because it is at its declared RPM/TPM (usage-based).
pub const EXCLUDED_LIMIT: &str = "limit";

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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub group: String,
    pub strategy: Strategy,
    pub candidates: Vec<CandidateRecord>,
    /// Deployment ids in the order they go into the plan.
    pub order: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub deployment: String,
    #[serde(flatten)]
    pub signals: CandidateSignals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Why the candidate is not in the plan (`tags`, `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoRecord {
    pub name: String,
    pub mode: AutoMode,
    pub candidates: Vec<AutoCandidate>,
    /// Group ids, best first.
    pub order: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoCandidate {
    pub group: String,
    pub quality: u32,
    /// Best expected cost (cheapest, quality-first) or latency (fastest); none when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub model: String,
    /// (group id, weight) per arm.
    pub arms: Vec<(String, u32)>,
    pub sticky: bool,
    /// The point in [0, total weight) that picked the arm.
    pub bucket: u64,
    pub arm: String,
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
