//! Deployment quotas across the fleet. A deployment's declared `rpm`/`tpm` is the provider's
//! quota for everyone calling it, so with shared state each replica adds the requests and tokens
//! it sent to per-minute counters in Redis and reads back the fleet's totals, every interval, in
//! one pipelined round trip. Routing then skips a deployment the fleet has used up, not just one
//! this replica has. The request path never waits on it: the worst overshoot is what the fleet
//! sends in one interval.

use std::{sync::Arc, time::Duration};

use modelgate_crds::spend::{Meter, Subject, counter_key};
use redis::aio::ConnectionManager;

use super::connection::SharedConnection;

use crate::{config::ConfigHandle, signals::DeploymentSignals, telemetry::Metrics};

/// How often a replica shares its counts and reads the fleet's.
const INTERVAL: Duration = Duration::from_millis(500);
/// Counters outlive their minute by this much.
const KEEP_MS: i64 = 120_000;

/// Shares this replica's deployment usage with the fleet, and reads the fleet's, until the
/// process ends.
pub fn share_deployment_usage(
    connection: SharedConnection,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(snapshot) = config.current() else {
                continue;
            };
            // Only deployments with a declared quota: the rest have nothing to enforce.
            let limited: Vec<(Arc<str>, Arc<DeploymentSignals>)> = snapshot
                .groups()
                .iter()
                .flat_map(|g| &g.deployments)
                .filter(|d| d.hot.rpm.is_some() || d.hot.tpm.is_some())
                .map(|d| (d.id.clone(), d.signals.clone()))
                .collect();
            if limited.is_empty() {
                continue;
            }
            // Not connected yet: the counts stay unshared until Redis answers.
            if let Ok(mut connection) = connection.get() {
                sync(&mut connection, &limited, &metrics).await;
            }
        }
    });
}

async fn sync(
    connection: &mut ConnectionManager,
    limited: &[(Arc<str>, Arc<DeploymentSignals>)],
    metrics: &Metrics,
) {
    let minute = jiff::Timestamp::now().as_second().div_euclid(60);
    let expire_at = (minute + 1) * 60_000 + KEEP_MS;
    let mut pipe = redis::pipe();
    let mut taken = Vec::with_capacity(limited.len());
    for (id, signals) in limited {
        let subject = Subject::Deployment { id };
        let requests_key = counter_key(subject, Meter::Requests { minute });
        let tokens_key = counter_key(subject, Meter::Tokens { minute });
        let (requests, tokens) = signals.take_unshared();
        taken.push((requests, tokens));
        for (key, delta) in [(&requests_key, requests), (&tokens_key, tokens)] {
            pipe.cmd("INCRBY").arg(key).arg(delta);
            pipe.cmd("PEXPIREAT").arg(key).arg(expire_at).ignore();
        }
    }
    match pipe.query_async::<Vec<u64>>(connection).await {
        Ok(totals) => {
            for ((_, signals), pair) in limited.iter().zip(totals.chunks(2)) {
                if let [requests, tokens] = pair {
                    signals.set_fleet(*requests, *tokens);
                }
            }
            metrics.fleet_usage_synced();
        }
        Err(error) => {
            for ((_, signals), (requests, tokens)) in limited.iter().zip(taken) {
                signals.give_back(requests, tokens);
            }
            metrics.limit_store_error("share_usage");
            tracing::debug!(%error, "cannot share deployment usage with the fleet");
        }
    }
}
