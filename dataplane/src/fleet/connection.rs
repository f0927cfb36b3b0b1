//! One Redis connection for everything a replica keeps in Redis (limits, cooldowns, deployment
//! usage, the response cache). Redis being down when the gateway starts must not keep it from
//! starting: the fail mode decides what requests get meanwhile. So the connection is made in the
//! background, retried until it succeeds; once made, redis-rs's connection manager reconnects on
//! its own, sharing one attempt between concurrent requests.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Redis cannot be used: a bad URL, or no connection made yet.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConnectionError(pub String);

/// Pause between attempts at the first connection.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct SharedConnection {
    client: redis::Client,
    manager: Arc<ArcSwapOption<ConnectionManager>>,
}

impl SharedConnection {
    /// Opens `url`, waiting for the first connection at most `timeout`; if Redis does not answer
    /// by then, keeps trying in the background. Every command gives up after `timeout`.
    pub async fn open(url: &str, timeout: Duration) -> Result<Self, ConnectionError> {
        let client = redis::Client::open(url).map_err(|e| ConnectionError(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let shared = Self {
            client: client.clone(),
            manager: Arc::new(ArcSwapOption::empty()),
        };
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(manager) => shared.manager.store(Some(Arc::new(manager))),
            Err(error) => {
                tracing::warn!(%error, "Redis is unreachable; connecting in the background");
                let slot = shared.manager.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(RETRY).await;
                        if let Ok(manager) =
                            ConnectionManager::new_with_config(client.clone(), config.clone()).await
                        {
                            slot.store(Some(Arc::new(manager)));
                            tracing::info!("connected to Redis");
                            return;
                        }
                    }
                });
            }
        }
        Ok(shared)
    }

    /// The connection, or an error while the first one has not been made.
    pub fn get(&self) -> Result<ConnectionManager, ConnectionError> {
        self.manager
            .load()
            .as_deref()
            .cloned()
            .ok_or_else(|| ConnectionError("not connected to Redis yet".to_owned()))
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }
}
