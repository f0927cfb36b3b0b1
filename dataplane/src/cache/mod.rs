//! The response cache: exact-match, on by default, tenant-scoped, streaming-aware. An exact
//! repeat of a request (same tenant scope, same resolved model group, same output-changing
//! parameters) is served without calling a provider and costs nothing.
//!
//! Entries are complete answers. A streamed answer is assembled when its stream completes; a hit
//! on a streaming request is replayed as SSE; a hit on a complete request for an answer that was
//! streamed returns the assembled completion. Only complete successful answers are stored: never
//! an error, never a cut stream, never a choice that did not finish.

pub mod assemble;
mod key;
pub mod replay;
pub mod store;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use modelgate_crds::{compiled::CompiledCache, routing_policy::CacheScope};

pub use key::CacheKey;
pub use store::{CacheStore, MemoryCache, RedisCache};

use crate::{
    config::{Group, KeyEntry},
    request::{Endpoint, JsonRequest, Native},
    telemetry::Metrics,
};

/// How long an entry lives when the policy sets no `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// What the cache does with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Neither looked up nor stored.
    Bypass,
    Use {
        key: CacheKey,
        ttl: Duration,
        hits_count_against_rpm: bool,
    },
}

pub struct Cache {
    store: Option<Arc<dyn CacheStore>>,
    max_entry_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Cache {
    /// `store: None` turns the cache off for every request.
    pub fn new(
        store: Option<Arc<dyn CacheStore>>,
        max_entry_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            max_entry_bytes,
            metrics,
        }
    }

    /// Whether and under which key this request uses the cache.
    pub fn decide(
        &self,
        caller: &KeyEntry,
        group: &Group,
        endpoint: Endpoint,
        request: &JsonRequest,
        native: Option<&Native>,
        opted_out: bool,
    ) -> Decision {
        let default = CompiledCache::default();
        let policy = caller.policy.as_ref().map_or(&default, |p| &p.spec.cache);
        let sampled = policy.bypass_above_temperature.is_some_and(|threshold| {
            request
                .field::<f64>("temperature")
                .ok()
                .flatten()
                .is_some_and(|t| t > threshold)
        });
        if self.store.is_none()
            || !policy.enabled
            || opted_out
            || sampled
            || endpoint == Endpoint::ImageGenerations
        {
            return Decision::Bypass;
        }
        let key = &caller.spec;
        let scope = match policy.scope {
            CacheScope::Org => format!("org|{}|{}", key.namespace, key.org),
            CacheScope::Key => format!("key|{}|{}", key.namespace, key.name),
            CacheScope::Group => format!(
                "group|{}|{}",
                key.namespace,
                policy.share_group.as_deref().unwrap_or_default()
            ),
        };
        // A request that arrived in another API is keyed by its own body: its translation may
        // leave out members that change the answer.
        let (api, request) = match native {
            Some(native) => (native.api.as_str(), &native.body),
            None => (endpoint.as_str(), request),
        };
        match key::derive(&scope, &group.id, api, request) {
            Some(cache_key) => Decision::Use {
                key: cache_key,
                ttl: policy.ttl_ms.map_or(DEFAULT_TTL, Duration::from_millis),
                hits_count_against_rpm: policy.hits_count_against_rpm,
            },
            None => Decision::Bypass,
        }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<Bytes> {
        self.store.as_ref()?.get(key).await
    }

    /// Stores `body` in the background; returns false when it is too large to store.
    pub fn put(&self, key: CacheKey, body: Bytes, ttl: Duration) -> bool {
        let Some(store) = self.store.clone() else {
            return false;
        };
        if body.len() > self.max_entry_bytes {
            return false;
        }
        // A body forwarded as received is a view into the upstream connection's read buffer;
        // an entry that outlives the request holds its own compact copy instead of pinning it.
        let body = Bytes::copy_from_slice(&body);
        // Counted once written, so the counter is a signal that the entry can be read.
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let bytes = body.len();
            if store.put(key, body, ttl).await {
                metrics.cache_stored(bytes);
            }
        });
        true
    }
}

/// Whether a complete answer may be stored: an embedding list, or a chat completion in which
/// every choice finished.
pub fn storable(endpoint: Endpoint, body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Completion {
        choices: Vec<Choice>,
    }
    #[derive(serde::Deserialize)]
    struct Choice {
        finish_reason: Option<String>,
    }
    match endpoint {
        Endpoint::Embeddings => true,
        Endpoint::ChatCompletions => serde_json::from_slice::<Completion>(body).is_ok_and(|c| {
            !c.choices.is_empty()
                && c.choices.iter().all(|choice| {
                    choice
                        .finish_reason
                        .as_deref()
                        .is_some_and(|r| r != "error")
                })
        }),
        Endpoint::ImageGenerations => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_whose_every_choice_finished_are_storable() {
        let chat = Endpoint::ChatCompletions;
        assert!(storable(
            chat,
            br#"{"choices":[{"finish_reason":"stop"},{"finish_reason":"length"}]}"#
        ));
        assert!(!storable(
            chat,
            br#"{"choices":[{"finish_reason":"stop"},{"finish_reason":null}]}"#
        ));
        assert!(!storable(chat, br#"{"choices":[]}"#));
        assert!(!storable(chat, br#"{"error":{"message":"x"}}"#));
        assert!(storable(Endpoint::Embeddings, br#"{"data":[]}"#));
        assert!(!storable(Endpoint::ImageGenerations, br#"{"data":[]}"#));
    }

    #[tokio::test]
    async fn an_answer_over_the_entry_limit_is_not_stored() {
        let store: Arc<dyn CacheStore> = Arc::new(MemoryCache::new(1 << 20));
        let cache = Cache::new(Some(store), 8, Arc::new(Metrics::new()));
        assert!(!cache.put(
            CacheKey([0; 32]),
            Bytes::from_static(b"123456789"),
            DEFAULT_TTL
        ));
        assert!(cache.put(
            CacheKey([1; 32]),
            Bytes::from_static(b"12345678"),
            DEFAULT_TTL
        ));
    }
}
