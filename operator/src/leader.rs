//! Leader election on a coordination.k8s.io/v1 Lease, so two replicas never publish at once.
//!
//! The leader renews the Lease every `renew_interval`. A standby takes it over only when the
//! Lease record has not changed for `lease_duration` as measured by its own clock (as client-go
//! does), so clock skew between nodes cannot make two leaders. A leader that cannot renew steps
//! down after two thirds of the duration, before any standby may take over. Writes use the
//! Lease's resourceVersion, so of two racing replicas exactly one wins. On shutdown the leader
//! releases the Lease, and a standby takes over on its next try instead of waiting it out.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::{sync::watch, time::Instant};

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The last Lease record seen (holder, renew time) and when this replica first saw it.
    observed: Option<(String, Instant)>,
}

/// Runs the election until `shutdown`; the receiver says whether this replica leads now.
pub fn spawn(
    client: Client,
    config: LeaseConfig,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (leading_tx, leading_rx) = watch::channel(false);
    let mut elector = Elector {
        api: Api::namespaced(client, &config.namespace),
        config,
        observed: None,
    };
    let task = tokio::spawn(async move {
        let mut last_renewal: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let leading = match elector.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewal = Some(now);
                    true
                }
                Ok(false) => false,
                Err(error) => {
                    tracing::warn!(%error, lease = %elector.config.name, "lease request failed");
                    // Keep leading through a blip, but never past the renew deadline.
                    let deadline = elector.config.lease_duration.mul_f64(2.0 / 3.0);
                    *leading_tx.borrow() && last_renewal.is_some_and(|at| now - at < deadline)
                }
            };
            if leading != *leading_tx.borrow() {
                tracing::info!(identity = %elector.config.identity, leading, "leadership changed");
                let _ = leading_tx.send(leading);
            }
            tokio::select! {
                () = tokio::time::sleep(elector.config.renew_interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        if *leading_tx.borrow() {
            let _ = leading_tx.send(false);
            if let Err(error) = elector.release().await {
                tracing::warn!(%error, "could not release the lease; a standby waits for it to expire");
            }
        }
    });
    (leading_rx, task)
}

impl Elector {
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let me = self.config.identity.clone();
        let duration_seconds =
            i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return won(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = format!(
            "{}@{}",
            holder.as_deref().unwrap_or(""),
            spec.renew_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        );
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record)
        {
            self.observed = Some((record, Instant::now()));
        }
        let held_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= held_for);
        let mine = holder.as_deref() == Some(me.as_str());
        if holder.is_some() && !mine && !expired {
            return Ok(false);
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if mine {
                spec.acquire_time
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
            ..spec
        });
        won(self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await)
    }

    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(identity = %self.config.identity, "released the lease");
        Ok(())
    }
}

/// A write that lost a race (409) is a lost election, not an error.
fn won<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
