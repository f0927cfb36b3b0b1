//! Routing: (snapshot, group, policy, seed) -> an ordered [`Plan`]. Pure and deterministic given
//! its inputs, so a decision can be re-derived from the seed in its log record.
//!
//! The plan is the group's deployments in strategy order, then each fallback group's, depth
//! first in declared order, each group at most once.

use modelgate_crds::common::Strategy;

use crate::config::{GroupId, Snapshot};

/// One deployment to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedAttempt {
    pub group: GroupId,
    pub deployment: usize,
}

/// The ordered attempts for one request.
#[derive(Clone, Debug)]
pub struct Plan {
    pub strategy: Strategy,
    pub seed: u64,
    pub attempts: Vec<PlannedAttempt>,
}

/// Builds the plan for `group`. `with_fallbacks: false` keeps it to the group's own deployments.
pub fn plan(snapshot: &Snapshot, group: GroupId, with_fallbacks: bool, seed: u64) -> Plan {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut attempts = Vec::with_capacity(snapshot.group(group).deployments.len());
    let mut visited = Vec::with_capacity(4);
    push_group(
        snapshot,
        group,
        with_fallbacks,
        &mut rng,
        &mut visited,
        &mut attempts,
    );
    Plan {
        strategy: Strategy::SimpleShuffle,
        seed,
        attempts,
    }
}

fn push_group(
    snapshot: &Snapshot,
    group: GroupId,
    with_fallbacks: bool,
    rng: &mut fastrand::Rng,
    visited: &mut Vec<GroupId>,
    attempts: &mut Vec<PlannedAttempt>,
) {
    if visited.contains(&group) {
        return;
    }
    visited.push(group);
    let g = snapshot.group(group);
    let weights: Vec<u32> = g.deployments.iter().map(|d| d.spec.weight).collect();
    attempts.extend(
        weighted_order(&weights, rng)
            .into_iter()
            .map(|deployment| PlannedAttempt { group, deployment }),
    );
    if with_fallbacks {
        for &fallback in &g.fallbacks {
            push_group(snapshot, fallback, with_fallbacks, rng, visited, attempts);
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_order() {
        let weights = [1, 2, 3, 4, 5];
        let a = weighted_order(&weights, &mut fastrand::Rng::with_seed(42));
        let b = weighted_order(&weights, &mut fastrand::Rng::with_seed(42));
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4], "a permutation");
    }

    #[test]
    fn the_first_pick_follows_the_weights() {
        let weights = [1, 3, 0];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut firsts = [0u32; 3];
        let n = 20_000;
        for _ in 0..n {
            firsts[weighted_order(&weights, &mut rng)[0]] += 1;
        }
        assert_eq!(firsts[2], 0, "weight 0 is never first while others exist");
        // Chi-square with 1 degree of freedom against 1:3; 10.83 is the p = 0.001 critical value.
        let expected = [f64::from(n) * 0.25, f64::from(n) * 0.75];
        let chi2: f64 = (0..2)
            .map(|i| (f64::from(firsts[i]) - expected[i]).powi(2) / expected[i])
            .sum();
        assert!(chi2 < 10.83, "chi2 = {chi2}, counts = {firsts:?}");
    }

    #[test]
    fn zero_weight_deployments_stay_reachable_at_the_end() {
        let order = weighted_order(&[0, 0, 1], &mut fastrand::Rng::with_seed(1));
        assert_eq!(order, vec![2, 0, 1]);
    }
}
