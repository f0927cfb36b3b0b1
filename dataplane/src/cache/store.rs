//! Where entries live: in this process (moka, bounded by bytes) or in Redis (shared by the
//! fleet). An entry is the complete response body (a chat completion, even when it was
//! streamed), with its expiry. A store failure is a miss, never an error.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use moka::{Expiry, sync::Cache};
use tokio::time::Instant;

use super::key::CacheKey;
use crate::{fleet::SharedConnection, telemetry::Metrics};

pub trait CacheStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<Bytes>>;
    /// Whether the entry was written.
    fn put<'a>(&'a self, key: CacheKey, body: Bytes, ttl: Duration) -> BoxFuture<'a, bool>;
}

#[derive(Clone)]
struct Stored {
    body: Bytes,
    /// Checked on every read with tokio's clock (so tests can move it); moka's own expiry only
    /// frees the memory.
    expires: Instant,
    ttl: Duration,
}

struct PerEntryTtl;

// moka's trait names std's Instant; the value is unused (expiry is checked with tokio's clock).
#[allow(clippy::disallowed_types)]
impl Expiry<CacheKey, Stored> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Stored,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// In-process entries, evicted least-recently-used once their bytes pass `max_bytes`.
pub struct MemoryCache {
    entries: Cache<CacheKey, Stored>,
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_key: &CacheKey, value: &Stored| {
                    u32::try_from(value.body.len() + 64).unwrap_or(u32::MAX)
                })
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    /// Bytes held now (after pending evictions have run).
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

impl CacheStore for MemoryCache {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let stored = self.entries.get(key)?;
            if Instant::now() >= stored.expires {
                self.entries.invalidate(key);
                return None;
            }
            Some(stored.body)
        })
    }

    fn put<'a>(&'a self, key: CacheKey, body: Bytes, ttl: Duration) -> BoxFuture<'a, bool> {
        // Written before the future is returned, so an answer is readable by the time its
        // response leaves: an exact repeat right after it is a hit, whatever the scheduler does.
        self.entries.insert(
            key,
            Stored {
                body,
                expires: Instant::now() + ttl,
                ttl,
            },
        );
        Box::pin(std::future::ready(true))
    }
}

/// Entries in Redis under `mg:c:<key hash>`, expiring with `PX`.
pub struct RedisCache {
    connection: SharedConnection,
    metrics: Arc<Metrics>,
}

impl RedisCache {
    pub fn new(connection: SharedConnection, metrics: Arc<Metrics>) -> Self {
        Self {
            connection,
            metrics,
        }
    }

    fn name(key: &CacheKey) -> String {
        format!("mg:c:{}", key.hex())
    }
}

impl CacheStore for RedisCache {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let found: Result<Option<Vec<u8>>, String> = match self.connection.get() {
                Ok(mut connection) => redis::cmd("GET")
                    .arg(Self::name(key))
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.0),
            };
            match found {
                Ok(body) => body.map(Bytes::from),
                Err(error) => {
                    self.metrics.cache_error("get");
                    tracing::debug!(%error, "cache read failed; treated as a miss");
                    None
                }
            }
        })
    }

    fn put<'a>(&'a self, key: CacheKey, body: Bytes, ttl: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let stored: Result<(), String> = match self.connection.get() {
                Ok(mut connection) => redis::cmd("SET")
                    .arg(Self::name(&key))
                    .arg(body.as_ref())
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.0),
            };
            if let Err(error) = &stored {
                self.metrics.cache_error("put");
                tracing::debug!(%error, "cache write failed");
            }
            stored.is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_its_ttl() {
        let cache = MemoryCache::new(1 << 20);
        let key = CacheKey([1; 32]);
        cache
            .put(key, Bytes::from_static(b"{}"), Duration::from_secs(60))
            .await;
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(cache.get(&key).await.is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache.get(&key).await.is_none());
    }

    #[tokio::test]
    async fn the_memory_bound_holds() {
        let cache = MemoryCache::new(64 * 1024);
        for i in 0..1_000u32 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            cache
                .put(
                    CacheKey(key),
                    Bytes::from(vec![b'x'; 1024]),
                    Duration::from_secs(60),
                )
                .await;
        }
        assert!(
            cache.weighted_size() <= 64 * 1024,
            "{}",
            cache.weighted_size()
        );
        assert!(cache.weighted_size() > 0);
    }
}
