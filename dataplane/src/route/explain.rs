//! `modelgate-dataplane explain`: re-derives each plan from its decision record (the recorded
//! signals, parameters and seed) and reports every record whose plan comes out different.

use std::io::BufRead;

use serde::Deserialize;

use super::{
    record::{Exclusion, RoutingRecord, arm_for, auto_order},
    strategy::rank,
};

/// The outcome of a replay.
#[derive(Debug, Default)]
pub struct Replay {
    /// Lines read.
    pub records: usize,
    /// Records that carried a routing decision and were re-derived.
    pub replayed: usize,
    /// (line number, request id, what differed).
    pub mismatches: Vec<(usize, String, String)>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    routing: Option<RoutingRecord>,
    #[serde(default)]
    context_window_routing: Option<RoutingRecord>,
}

/// Replays every decision record in `input` (one JSON object per line).
pub fn replay(input: impl BufRead) -> std::io::Result<Replay> {
    let mut out = Replay::default();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.records += 1;
        let parsed: Line = match serde_json::from_str(&line) {
            Ok(l) => l,
            Err(e) => {
                out.mismatches.push((
                    index + 1,
                    String::new(),
                    format!("not a decision record: {e}"),
                ));
                continue;
            }
        };
        let Some(routing) = parsed.routing else {
            continue;
        };
        out.replayed += 1;
        let rederived = rederive(&routing).and_then(|()| {
            parsed
                .context_window_routing
                .as_ref()
                .map_or(Ok(()), rederive)
        });
        if let Err(detail) = rederived {
            out.mismatches.push((index + 1, parsed.request_id, detail));
        }
    }
    Ok(out)
}

/// Re-derives the split arm, the auto order and each group's order, consuming the seeded rng in
/// the order routing did.
pub fn rederive(record: &RoutingRecord) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(record.seed);
    if let Some(split) = &record.split {
        let weights: Vec<u32> = split.arms.iter().map(|(_, w)| *w).collect();
        let total = weights.iter().map(|w| u64::from(*w)).sum::<u64>().max(1);
        let bucket = if split.sticky {
            split.bucket
        } else {
            rng.u64(..total)
        };
        if bucket != split.bucket {
            return Err(format!("split bucket {bucket}, recorded {}", split.bucket));
        }
        let arm = &split.arms[arm_for(&weights, bucket)].0;
        if *arm != split.arm {
            return Err(format!("split arm {arm}, recorded {}", split.arm));
        }
    }
    if let Some(auto) = &record.auto {
        let order: Vec<&str> = auto_order(auto.mode, &auto.candidates)
            .into_iter()
            .map(|i| &*auto.candidates[i].group)
            .collect();
        if order != auto.order.iter().map(|g| &**g).collect::<Vec<_>>() {
            return Err(format!("auto order {order:?}, recorded {:?}", auto.order));
        }
    }
    for group in &record.groups {
        let eligible: Vec<usize> = (0..group.candidates.len())
            .filter(|&i| {
                !group.candidates[i]
                    .excluded
                    .is_some_and(Exclusion::before_ranking)
            })
            .collect();
        let signals: Vec<_> = eligible
            .iter()
            .map(|&i| group.candidates[i].signals.clone())
            .collect();
        let ranking = rank(group.strategy, record.params, &signals, &mut rng);
        let order: Vec<usize> = ranking.order.iter().map(|&i| eligible[i]).collect();
        if order != group.order {
            let ids = |o: &[usize]| {
                o.iter()
                    .map(|&i| group.ids[i].to_string())
                    .collect::<Vec<_>>()
            };
            return Err(format!(
                "{}: order {:?}, recorded {:?}",
                group.group,
                ids(&order),
                ids(&group.order)
            ));
        }
    }
    Ok(())
}
