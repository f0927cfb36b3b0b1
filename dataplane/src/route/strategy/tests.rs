use super::*;

fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(42)
}

fn signals(f: impl Fn(&mut CandidateSignals)) -> CandidateSignals {
    let mut c = CandidateSignals {
        weight: 1,
        ..CandidateSignals::default()
    };
    f(&mut c);
    c
}

#[test]
fn the_same_seed_gives_the_same_order_for_every_strategy() {
    let candidates: Vec<CandidateSignals> = (0..6u32)
        .map(|i| {
            signals(|c| {
                c.weight = i + 1;
                c.in_flight = u64::from(i % 3);
                c.latency_ms = Some(f64::from(100 + i % 2));
                c.cost_usd = Some(f64::from(i % 2));
            })
        })
        .collect();
    for strategy in [
        Strategy::SimpleShuffle,
        Strategy::LeastBusy,
        Strategy::UsageBased,
        Strategy::LatencyBased,
        Strategy::CostBased,
    ] {
        let a = rank(strategy, Params::default(), &candidates, &mut rng());
        let b = rank(strategy, Params::default(), &candidates, &mut rng());
        assert_eq!(a, b, "{strategy:?}");
        let mut all = a.order.clone();
        all.extend(&a.skipped);
        all.sort_unstable();
        assert_eq!(
            all,
            (0..6).collect::<Vec<_>>(),
            "{strategy:?}: every candidate accounted for"
        );
    }
}

#[test]
fn shuffle_first_picks_follow_the_weights() {
    let weights = [1, 3, 0];
    let mut rng = rng();
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
    assert_eq!(
        weighted_order(&[0, 0, 1], &mut rng),
        vec![2, 0, 1],
        "weight 0 stays reachable, last"
    );
}

#[test]
fn least_busy_prefers_fewer_in_flight_and_breaks_ties_at_random() {
    let candidates = [
        signals(|c| c.in_flight = 3),
        signals(|c| c.in_flight = 1),
        signals(|c| c.in_flight = 1),
    ];
    let mut firsts = [0; 3];
    let mut rng = rng();
    for _ in 0..1000 {
        let order = rank(
            Strategy::LeastBusy,
            Params::default(),
            &candidates,
            &mut rng,
        )
        .order;
        assert_eq!(order[2], 0, "the busiest goes last");
        firsts[order[0]] += 1;
    }
    assert!(firsts[1] > 400 && firsts[2] > 400, "ties split: {firsts:?}");
}

#[test]
fn usage_based_prefers_headroom_and_skips_deployments_at_their_limit() {
    let candidates = [
        signals(|c| {
            c.rpm_limit = Some(100);
            c.rpm_used = 90;
        }),
        signals(|c| {
            c.rpm_limit = Some(10);
            c.rpm_used = 10;
        }),
        signals(|c| {
            c.tpm_limit = Some(1000);
            c.tpm_used = 500;
        }),
        signals(|_| {}),
    ];
    let ranking = rank(
        Strategy::UsageBased,
        Params::default(),
        &candidates,
        &mut rng(),
    );
    assert_eq!(ranking.order, vec![3, 2, 0]);
    assert_eq!(ranking.skipped, vec![1]);
    assert_eq!(ranking.scores[2], Some(0.5));
}

#[test]
fn latency_based_picks_the_fastest_band_and_sometimes_explores() {
    let candidates = [
        signals(|c| c.latency_ms = Some(300.0)),
        signals(|c| c.latency_ms = Some(100.0)),
        signals(|c| c.latency_ms = Some(105.0)),
        signals(|c| c.latency_ms = Some(200.0)),
    ];
    let params = Params {
        tolerance_percent: 10,
        exploration_percent: 0,
    };
    let mut firsts = [0; 4];
    let mut rng = rng();
    for _ in 0..1000 {
        let order = rank(Strategy::LatencyBased, params, &candidates, &mut rng).order;
        assert_eq!(&order[2..], &[3, 0], "outside the band, by latency");
        firsts[order[0]] += 1;
    }
    assert!(
        firsts[1] > 400 && firsts[2] > 400,
        "the band is shuffled: {firsts:?}"
    );

    let exploring = Params {
        tolerance_percent: 0,
        exploration_percent: 20,
    };
    let explored = (0..2000)
        .filter(|_| rank(Strategy::LatencyBased, exploring, &candidates, &mut rng).order[0] != 1)
        .count();
    // 20% explore, and 3 of 4 random picks are not the fastest: about 15%.
    assert!(
        (200..400).contains(&explored),
        "explored {explored} of 2000"
    );
}

#[test]
fn unmeasured_deployments_are_measured_first() {
    let candidates = [signals(|c| c.latency_ms = Some(50.0)), signals(|_| {})];
    let params = Params {
        tolerance_percent: 0,
        exploration_percent: 0,
    };
    assert_eq!(
        rank(Strategy::LatencyBased, params, &candidates, &mut rng()).order,
        vec![1, 0]
    );
}

#[test]
fn cost_based_prefers_cheaper_then_faster_and_unpriced_last() {
    let candidates = [
        signals(|c| c.cost_usd = None),
        signals(|c| {
            c.cost_usd = Some(0.002);
            c.latency_ms = Some(90.0);
        }),
        signals(|c| {
            c.cost_usd = Some(0.002);
            c.latency_ms = Some(40.0);
        }),
        signals(|c| c.cost_usd = Some(0.0005)),
    ];
    let ranking = rank(
        Strategy::CostBased,
        Params::default(),
        &candidates,
        &mut rng(),
    );
    assert_eq!(ranking.order, vec![3, 2, 1, 0]);
}

#[test]
fn every_strategy_skips_a_deployment_at_its_declared_limit() {
    let candidates = [
        signals(|c| {
            c.weight = 1000;
            c.rpm_limit = Some(10);
            c.rpm_used = 10;
            c.cost_usd = Some(0.0);
            c.latency_ms = Some(1.0);
        }),
        signals(|c| {
            c.weight = 1;
            c.tpm_limit = Some(100);
            c.tpm_used = 150;
        }),
        signals(|c| {
            c.weight = 1;
            c.in_flight = 5;
            c.cost_usd = Some(1.0);
            c.latency_ms = Some(100.0);
        }),
    ];
    for strategy in [
        Strategy::SimpleShuffle,
        Strategy::LeastBusy,
        Strategy::LatencyBased,
        Strategy::CostBased,
        Strategy::UsageBased,
    ] {
        let ranking = rank(strategy, Params::default(), &candidates, &mut rng());
        assert_eq!(ranking.order, vec![2], "{strategy:?}");
        assert_eq!(ranking.skipped, vec![0, 1], "{strategy:?}");
        assert_eq!(ranking.scores.len(), 3);
    }
}
