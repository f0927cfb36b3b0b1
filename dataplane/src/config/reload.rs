//! The one place a config becomes the served snapshot: fallible prepare (merge the
//! credentials, index), then an infallible commit. A config comes whole from a standalone file,
//! or, in a cluster, without its credentials from the API, with the credentials from a mounted
//! Secret; either half changing rebuilds the snapshot from the latest of both.

use std::sync::{Arc, Mutex};

use modelgate_crds::{CompiledConfig, ObjectReport, credentials::CredentialBundle};
use tokio::sync::watch;

use super::{ConfigHandle, Snapshot, SnapshotError};
use crate::{signals::SignalRegistry, sync::lock, telemetry::Metrics};

/// Builds and commits snapshots.
pub struct Reloader {
    handle: ConfigHandle,
    metrics: Arc<Metrics>,
    signals: Arc<SignalRegistry>,
    latest: Mutex<Latest>,
    /// The checksum now served, for whoever reports it (the heartbeat).
    served: watch::Sender<Option<String>>,
}

#[derive(Default)]
struct Latest {
    config: Option<CompiledConfig>,
    credentials: Option<CredentialBundle>,
}

impl Reloader {
    pub fn new(handle: ConfigHandle, metrics: Arc<Metrics>, signals: Arc<SignalRegistry>) -> Self {
        Self {
            handle,
            metrics,
            signals,
            latest: Mutex::default(),
            served: watch::channel(None).0,
        }
    }

    /// The checksum served, and every change of it.
    pub fn served(&self) -> watch::Receiver<Option<String>> {
        self.served.subscribe()
    }

    /// A new config; `reports` are what compiling it found (empty for a compiled config).
    pub fn config(
        &self,
        config: CompiledConfig,
        reports: &[ObjectReport],
    ) -> Result<(), SnapshotError> {
        log_reports(reports);
        self.metrics
            .set_rejected_objects(reports.iter().filter(|r| !r.is_accepted()).count());
        let mut latest = lock(&self.latest);
        let previous = latest.config.replace(config);
        let result = self.commit(&latest);
        if result.is_err() {
            latest.config = previous;
        }
        result
    }

    /// New credentials for the config (a cluster's mounted Secret).
    pub fn credentials(&self, bundle: CredentialBundle) -> Result<(), SnapshotError> {
        let mut latest = lock(&self.latest);
        let previous = latest.credentials.replace(bundle);
        let result = match latest.config {
            Some(_) => self.commit(&latest),
            None => Ok(()),
        };
        if result.is_err() {
            latest.credentials = previous;
        }
        result
    }

    fn commit(&self, latest: &Latest) -> Result<(), SnapshotError> {
        let Some(config) = &latest.config else {
            return Ok(());
        };
        let mut config = config.clone();
        if let Some(bundle) = &latest.credentials {
            let missing = config.with_credentials(bundle);
            if !missing.is_empty() {
                tracing::warn!(
                    deployments = ?missing,
                    "credentials not delivered yet (the kubelet refreshes the mounted Secret on its own clock); these deployments fail over until they arrive"
                );
            }
        }
        let snapshot = Snapshot::build(config, &self.signals)?;
        for (deployment, priced_as) in snapshot.catalog_priced() {
            tracing::info!(%deployment, %priced_as, "deployment has no pricing: costed at the catalog's list price");
        }
        for (deployment, tags) in snapshot.catalog_tagged() {
            tracing::info!(%deployment, tags = %tags.join(","), "deployment declares no tags: it serves its model's catalog capabilities");
        }
        let checksum = snapshot.checksum().to_owned();
        let groups = snapshot.groups().len();
        self.handle.commit(snapshot);
        tracing::info!(%checksum, groups, "config loaded");
        self.served.send_replace(Some(checksum));
        Ok(())
    }
}

fn log_reports(reports: &[ObjectReport]) {
    for report in reports {
        if let Err(rejection) = &report.outcome {
            tracing::warn!(
                kind = report.kind.as_str(),
                namespace = %report.namespace,
                name = %report.name,
                reason = rejection.reason.as_str(),
                message = %rejection.message,
                "object rejected from config"
            );
        }
        for warning in &report.warnings {
            tracing::warn!(
                kind = report.kind.as_str(),
                namespace = %report.namespace,
                name = %report.name,
                reason = warning.reason.as_str(),
                message = %warning.message,
                "object accepted with a warning"
            );
        }
    }
}
