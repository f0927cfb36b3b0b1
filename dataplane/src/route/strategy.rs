//! The five strategies as one pure function: (strategy, parameters, candidate signals, seeded
//! rng) -> an ordered list. The same inputs give the same order, which is what lets `explain`
//! re-derive a plan from its decision record.

use modelgate_crds::common::Strategy;
use serde::{Deserialize, Serialize};

/// What a strategy ranks one candidate on; recorded for every candidate of every decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CandidateSignals {
    pub weight: u32,
    pub in_flight: u64,
    pub rpm_used: u64,
    pub tpm_used: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    /// The latency average that fits the request (TTFT for streams, per output token otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Expected cost of this request in USD, when the deployment has prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// Strategy tuning from the RoutingPolicy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub tolerance_percent: u32,
    pub exploration_percent: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            tolerance_percent: modelgate_crds::compile::DEFAULT_TOLERANCE_PERCENT,
            exploration_percent: modelgate_crds::compile::DEFAULT_EXPLORATION_PERCENT,
        }
    }
}

/// The outcome for one group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ranking {
    /// Candidate indexes in the order they are tried.
    pub order: Vec<usize>,
    /// The value each candidate was ranked on (None where the strategy uses none).
    pub scores: Vec<Option<f64>>,
    /// Candidates left out: at their declared RPM/TPM this minute.
    pub skipped: Vec<usize>,
}

/// Orders `candidates` by `strategy`. Whatever the strategy, a deployment at its declared RPM
/// or TPM for this minute is skipped: it would only answer 429.
pub fn rank(
    strategy: Strategy,
    params: Params,
    candidates: &[CandidateSignals],
    rng: &mut fastrand::Rng,
) -> Ranking {
    let n = candidates.len();
    if strategy == Strategy::UsageBased || candidates.iter().all(|c| headroom(c).is_some()) {
        return rank_open(strategy, params, candidates, rng);
    }
    let (open, skipped): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|&i| headroom(&candidates[i]).is_some());
    let open_signals: Vec<CandidateSignals> = open.iter().map(|&i| candidates[i].clone()).collect();
    let inner = rank_open(strategy, params, &open_signals, rng);
    let mut scores = vec![None; n];
    for (j, score) in inner.scores.into_iter().enumerate() {
        scores[open[j]] = score;
    }
    Ranking {
        order: inner.order.into_iter().map(|j| open[j]).collect(),
        scores,
        skipped,
    }
}

fn rank_open(
    strategy: Strategy,
    params: Params,
    candidates: &[CandidateSignals],
    rng: &mut fastrand::Rng,
) -> Ranking {
    let n = candidates.len();
    if n == 0 {
        return Ranking::default();
    }
    match strategy {
        Strategy::SimpleShuffle => {
            let weights: Vec<u32> = candidates.iter().map(|c| c.weight).collect();
            Ranking {
                order: weighted_order(&weights, rng),
                scores: vec![None; n],
                skipped: Vec::new(),
            }
        }
        Strategy::LeastBusy => {
            let scores: Vec<f64> = candidates.iter().map(|c| c.in_flight as f64).collect();
            Ranking {
                order: ascending_with_random_ties(&scores, (0..n).collect(), rng),
                scores: scores.into_iter().map(Some).collect(),
                skipped: Vec::new(),
            }
        }
        Strategy::UsageBased => {
            let headroom: Vec<Option<f64>> = candidates.iter().map(headroom).collect();
            let (open, skipped): (Vec<usize>, Vec<usize>) =
                (0..n).partition(|&i| headroom[i].is_some());
            // More headroom first: rank on the negated value.
            let keys: Vec<f64> = headroom.iter().map(|h| -h.unwrap_or(0.0)).collect();
            Ranking {
                order: ascending_with_random_ties(&keys, open, rng),
                scores: headroom,
                skipped,
            }
        }
        Strategy::LatencyBased => latency_order(params, candidates, rng),
        Strategy::CostBased => {
            let scores: Vec<Option<f64>> = candidates.iter().map(|c| c.cost_usd).collect();
            let mut keyed: Vec<(f64, f64, u64, usize)> = (0..n)
                .map(|i| {
                    let c = &candidates[i];
                    (
                        c.cost_usd.unwrap_or(f64::INFINITY),
                        c.latency_ms.unwrap_or(f64::INFINITY),
                        rng.u64(..),
                        i,
                    )
                })
                .collect();
            keyed.sort_by(|a, b| {
                a.0.total_cmp(&b.0)
                    .then(a.1.total_cmp(&b.1))
                    .then(a.2.cmp(&b.2))
            });
            Ranking {
                order: keyed.into_iter().map(|k| k.3).collect(),
                scores,
                skipped: Vec::new(),
            }
        }
    }
}

/// Share of the declared RPM/TPM left this minute (the smaller of the two), or `None` when a
/// limit is reached. Without declared limits a deployment has all its headroom.
fn headroom(c: &CandidateSignals) -> Option<f64> {
    let left = |limit: Option<u64>, used: u64| match limit {
        None => Some(1.0),
        Some(l) if used >= l => None,
        Some(l) => Some((l - used) as f64 / l as f64),
    };
    Some(left(c.rpm_limit, c.rpm_used)?.min(left(c.tpm_limit, c.tpm_used)?))
}

/// Lowest latency first; candidates within the tolerance band of the best are shuffled, and an
/// exploration share of requests puts a random candidate first so a recovered deployment gets
/// measured again. Unmeasured deployments count as fastest, so they are measured at once.
fn latency_order(
    params: Params,
    candidates: &[CandidateSignals],
    rng: &mut fastrand::Rng,
) -> Ranking {
    let n = candidates.len();
    let scores: Vec<f64> = candidates
        .iter()
        .map(|c| c.latency_ms.unwrap_or(0.0))
        .collect();
    let explore = rng.f64() < f64::from(params.exploration_percent) / 100.0;
    let mut sorted: Vec<usize> = (0..n).collect();
    sorted.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let best = scores[sorted[0]];
    let limit = best * (1.0 + f64::from(params.tolerance_percent) / 100.0);
    let band = sorted.iter().take_while(|&&i| scores[i] <= limit).count();
    rng.shuffle(&mut sorted[..band]);
    if explore && n > 1 {
        let pick = rng.usize(..n);
        let chosen = sorted.remove(pick);
        sorted.insert(0, chosen);
    }
    Ranking {
        order: sorted,
        scores: candidates.iter().map(|c| c.latency_ms).collect(),
        skipped: Vec::new(),
    }
}

/// `indexes` sorted by `keys[i]` ascending, ties broken by a random draw per index.
fn ascending_with_random_ties(
    keys: &[f64],
    indexes: Vec<usize>,
    rng: &mut fastrand::Rng,
) -> Vec<usize> {
    let mut keyed: Vec<(f64, u64, usize)> = indexes
        .into_iter()
        .map(|i| (keys[i], rng.u64(..), i))
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|k| k.2).collect()
}

/// A weighted random permutation (Efraimidis–Spirakis with exponential keys): index `i` comes
/// first with probability `w[i] / sum(w)`. Weight 0 goes last, in declared order.
pub fn weighted_order(weights: &[u32], rng: &mut fastrand::Rng) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let key = if w == 0 {
                f64::INFINITY
            } else {
                // 1 - f64() lies in (0, 1], so ln() is finite.
                -(1.0 - rng.f64()).ln() / f64::from(w)
            };
            (key, i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests;
