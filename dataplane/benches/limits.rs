//! The cost of spend control on the request path: one admit (reserve a budget, count RPM and
//! TPM) and one settle, against the memory store and against a real `redis-server` on loopback.
//! Only the admit is on the request path (a settle runs after the answer), so both are shown.
//! `cargo bench -p modelgate-dataplane --bench limits` (needs redis-server on the PATH).

// A benchmark panics on broken setup; that is its assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use modelgate_dataplane::limits::{
    MemoryStore, RedisStore, Store,
    store::{Admission, BudgetCharge, RateCharge, Settlement},
};
use testbin::redis::RedisServer;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// What a key with a budget, an RPM and a TPM limit asks of the store: three counters.
fn admission() -> Admission {
    let id = format!("req_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    Admission {
        id,
        now_ms: 1_000,
        reservation_ttl_ms: 900_000,
        budgets: vec![BudgetCharge {
            counter: "mg:bench-budget".to_owned(),
            limit: i64::MAX / 4,
            amount: 107_000_000,
            expire_at_ms: 0,
        }],
        rates: vec![
            RateCharge {
                counter: "mg:bench-rpm".to_owned(),
                limit: i64::MAX / 4,
                amount: 1,
                expire_at_ms: i64::MAX / 4,
            },
            RateCharge {
                counter: "mg:bench-tpm".to_owned(),
                limit: i64::MAX / 4,
                amount: 107,
                expire_at_ms: i64::MAX / 4,
            },
        ],
    }
}

fn settlement(id: String) -> Settlement {
    Settlement {
        id,
        now_ms: 1_000,
        budgets: vec![("mg:bench-budget".to_owned(), 12_000_000)],
        rates: vec![("mg:bench-tpm".to_owned(), -95)],
        meters: Vec::new(),
    }
}

fn bench_store(
    c: &mut Criterion,
    name: &str,
    runtime: &tokio::runtime::Runtime,
    store: &dyn Store,
) {
    c.bench_function(&format!("admit/{name}"), |b| {
        b.iter(|| runtime.block_on(store.admit(&admission())).unwrap());
    });
    c.bench_function(&format!("admit+settle/{name}"), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let admission = admission();
                store.admit(&admission).await.unwrap();
                store.settle(&settlement(admission.id)).await.unwrap();
            });
        });
    });
}

fn limits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let memory = MemoryStore::open(None).unwrap();
    bench_store(c, "memory", &runtime, memory.as_ref());
    let redis = runtime.block_on(RedisServer::start());
    let store = runtime
        .block_on(RedisStore::connect(&redis.url(), Duration::from_secs(1)))
        .unwrap();
    bench_store(c, "redis", &runtime, &store);
}

criterion_group!(benches, limits);
criterion_main!(benches);
