//! Fleet-wide cooldowns over Redis pub/sub. When a replica opens a breaker (a Retry-After from
//! the provider, or failures), it publishes the cooldown; every other replica applies it to the
//! same org's breaker of the same deployment, so the fleet stops calling a deployment that told
//! one of them to back off. Breakers stay local and in memory: no store read on the request path.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::connection::SharedConnection;
use crate::telemetry::Metrics;

const CHANNEL: &str = "mg:cooldowns";
/// Pause before resubscribing after the subscription connection drops.
const RESUBSCRIBE: Duration = Duration::from_secs(1);
/// Cooldowns longer than this from a message are capped (a bad message cannot park a
/// deployment for days).
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// A cooldown one replica started, for the others of the fleet to apply too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cooldown {
    pub org: String,
    pub deployment: Arc<str>,
    pub pause: Duration,
}

#[derive(Serialize, Deserialize)]
struct Message {
    /// The publishing replica, which ignores its own messages.
    replica: String,
    org: String,
    deployment: String,
    pause_ms: u64,
}

/// Starts publishing this replica's cooldowns and applying the fleet's; returns where to send
/// this replica's cooldowns.
pub fn share_cooldowns(
    connection: SharedConnection,
    apply: Arc<dyn Fn(&Cooldown) + Send + Sync>,
    metrics: Arc<Metrics>,
) -> mpsc::UnboundedSender<Cooldown> {
    let replica = format!("{:032x}", fastrand::u128(..));
    let (announcer, mut announcements) = mpsc::unbounded_channel::<Cooldown>();
    let me = replica.clone();
    let publish_metrics = metrics.clone();
    let client = connection.client().clone();
    tokio::spawn(async move {
        while let Some(cooldown) = announcements.recv().await {
            let message = Message {
                replica: me.clone(),
                org: cooldown.org,
                deployment: cooldown.deployment.to_string(),
                pause_ms: u64::try_from(cooldown.pause.as_millis()).unwrap_or(u64::MAX),
            };
            let Ok(payload) = serde_json::to_string(&message) else {
                continue;
            };
            let published = match connection.get() {
                Ok(mut publisher) => redis::cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(payload)
                    .query_async::<i64>(&mut publisher)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = published {
                publish_metrics.limit_store_error("publish_cooldown");
                tracing::warn!(%error, "cannot share a cooldown with the fleet");
            }
        }
    });
    tokio::spawn(async move {
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(CHANNEL).await.is_ok() {
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            let Ok(payload) = message.get_payload::<String>() else {
                                continue;
                            };
                            let Ok(message) = serde_json::from_str::<Message>(&payload) else {
                                continue;
                            };
                            if message.replica == replica {
                                continue;
                            }
                            apply(&Cooldown {
                                org: message.org,
                                deployment: Arc::from(message.deployment),
                                pause: Duration::from_millis(message.pause_ms).min(MAX_PAUSE),
                            });
                            metrics.remote_cooldown();
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "cooldown subscription unavailable"),
            }
            tokio::time::sleep(RESUBSCRIBE).await;
        }
    });
    announcer
}
