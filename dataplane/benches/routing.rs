//! Routing alone: key lookup, model resolution, tag filter, strategy and plan, over a large
//! config (1,000 groups of 8 deployments, 10,000 keys) and a small one, to show the cost does not
//! grow with the config; and a config swap of each size as a data plane does it (the compiled
//! config's JSON parsed, the snapshot built and committed while the old one is still served).
//! `cargo bench -p modelgate-dataplane --bench routing`.

// A benchmark panics on broken setup; that is its assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{alloc::System, collections::BTreeMap, hint::black_box, sync::Arc, time::Duration};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use modelgate_crds::{
    CompiledConfig, ProviderKind,
    common::{Pricing, Strategy},
    compiled::{
        CompiledBreaker, CompiledCache, CompiledDeployment, CompiledKey, CompiledModelGroup,
        CompiledPolicy, CompiledRetries, CompiledTimeouts, hash_key,
    },
    routing_policy::StreamCommit,
};
use modelgate_dataplane::{
    auth,
    config::{ConfigHandle, Snapshot, reload::Reloader},
    route::{self, RouteInput},
    signals::SignalRegistry,
    telemetry::Metrics,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

const DEPLOYMENTS_PER_GROUP: usize = 8;

/// Counts allocations, to show that the work per decision does not grow with the config.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn config(groups: usize, keys: usize) -> CompiledConfig {
    let mut config = CompiledConfig::empty();
    for g in 0..groups {
        let name = format!("group-{g}");
        let deployments = (0..DEPLOYMENTS_PER_GROUP)
            .map(|d| CompiledDeployment {
                id: format!("default/{name}/d{d}"),
                name: format!("d{d}"),
                provider: ProviderKind::Mock,
                model: format!("upstream-{d}"),
                base_url: None,
                allow_loopback: false,
                credential_refs: None,
                api_key: None,
                aws: None,
                region: None,
                project: None,
                api_version: None,
                weight: 1 + d as u32,
                rpm: Some(10_000),
                tpm: Some(1_000_000),
                tags: if d % 2 == 0 {
                    vec!["vision".to_owned()]
                } else {
                    Vec::new()
                },
                catalog_tags: false,
                context_window: None,
                catalog: None,
                pricing: Some(Pricing {
                    input: 0.1 * (d + 1) as f64,
                    output: 0.4 * (d + 1) as f64,
                    cached_input: None,
                }),
                timeouts: CompiledTimeouts::default(),
                mock: None,
            })
            .collect();
        config.model_groups.insert(
            format!("default/{name}"),
            CompiledModelGroup {
                namespace: "default".to_owned(),
                name: name.clone(),
                models: vec![format!("model-{g}"), format!("alias-{g}")],
                tags: vec!["function-calling".to_owned()],
                strategy: None,
                fallbacks: Vec::new(),
                context_window_fallbacks: Vec::new(),
                deployments,
                quality: None,
                default_max_tokens: None,
            },
        );
    }
    config.policies.insert(
        "default/default".to_owned(),
        CompiledPolicy {
            namespace: "default".to_owned(),
            name: "default".to_owned(),
            orgs: Vec::new(),
            teams: Vec::new(),
            strategy: None,
            retries: CompiledRetries::default(),
            timeouts: CompiledTimeouts::default(),
            circuit_breaker: CompiledBreaker::default(),
            cache: CompiledCache::default(),
            default_tags: Vec::new(),
            budget: None,
            rpm: None,
            tpm: None,
            auto: None,
            splits: BTreeMap::new(),
            allow_strategy_override: true,
            allow_tag_override: true,
            allow_unpriced: false,
            latency_tolerance_percent: 10,
            exploration_percent: 5,
            stream_commit: StreamCommit::default(),
            spend_tags: BTreeMap::new(),
        },
    );
    for k in 0..keys {
        config.keys.insert(
            hash_key(&key_material(k)),
            CompiledKey {
                namespace: "default".to_owned(),
                name: format!("key-{k}"),
                org: format!("org-{}", k % 50),
                team: None,
                allowed_models: Vec::new(),
                default_tags: Vec::new(),
                budget: None,
                rpm: None,
                tpm: None,
                expires_at: None,
                metadata: BTreeMap::new(),
            },
        );
    }
    config.seal();
    config
}

fn key_material(k: usize) -> String {
    format!("sk-mg-bench-{k:012}")
}

fn routing(c: &mut Criterion) {
    let mut bench = c.benchmark_group("route");
    for (groups, keys) in [(10, 100), (1_000, 10_000)] {
        let signals = SignalRegistry::default();
        let snapshot = Snapshot::build(config(groups, keys), &signals).unwrap();
        let headers: Vec<HeaderMap> = (0..keys)
            .map(|k| {
                let mut h = HeaderMap::new();
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {}", key_material(k))).unwrap(),
                );
                h
            })
            .collect();
        let models: Vec<String> = (0..groups).map(|g| format!("alias-{g}")).collect();
        let tags = vec!["function-calling".to_owned(), "vision".to_owned()];
        for strategy in [
            Strategy::SimpleShuffle,
            Strategy::LatencyBased,
            Strategy::CostBased,
        ] {
            let decide = |i: usize| {
                let key =
                    auth::authenticate(&snapshot, auth::bearer(&headers[i % keys]), 0).unwrap();
                let input = RouteInput {
                    model: &models[i % groups],
                    tags: &tags,
                    explicit_tags: false,
                    strategy_override: Some(strategy),
                    fallbacks: true,
                    stream: false,
                    prompt_tokens: 200,
                    max_tokens: Some(256),
                    priced_only: false,
                    seed: i as u64,
                };
                route::route(&snapshot, key, &input).unwrap()
            };
            let region = Region::new(ALLOCATOR);
            for i in 0..1000 {
                black_box(decide(i * 7919));
            }
            let per_decision = region.change().allocations as f64 / 1000.0;
            println!(
                "allocations per decision, {} {groups}g-{keys}k: {per_decision:.1}",
                strategy.as_str()
            );
            let id = BenchmarkId::new(strategy.as_str(), format!("{groups}g-{keys}k"));
            let mut i = 0usize;
            bench.bench_function(id, |b| {
                b.iter(|| {
                    i = i.wrapping_add(7919);
                    black_box(decide(i))
                });
            });
        }
    }
    bench.finish();
}

/// A whole config swap: what a data plane does when its config Secret changes.
fn swap(c: &mut Criterion) {
    let mut bench = c.benchmark_group("swap");
    bench
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (groups, keys) in [(10, 100), (1_000, 10_000)] {
        let json = serde_json::to_vec(&config(groups, keys)).unwrap();
        let signals = Arc::new(SignalRegistry::default());
        let handle = ConfigHandle::default();
        let reloader = Reloader::new(handle.clone(), Arc::new(Metrics::new()), signals);
        reloader
            .config(serde_json::from_slice(&json).unwrap(), &[])
            .unwrap();
        println!(
            "compiled config of {groups}g-{keys}k: {} KiB of JSON",
            json.len() / 1024
        );
        let id = BenchmarkId::new("parse-build-commit", format!("{groups}g-{keys}k"));
        bench.bench_function(id, |b| {
            b.iter(|| {
                // A reader holds the old snapshot across the swap, as an in-flight request does.
                let old = handle.current();
                reloader
                    .config(serde_json::from_slice(&json).unwrap(), &[])
                    .unwrap();
                black_box(old)
            });
        });
    }
    bench.finish();
}

criterion_group!(benches, routing, swap);
criterion_main!(benches);
