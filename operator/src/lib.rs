//! The modelgate operator: reconciles ModelGroup, RoutingPolicy and VirtualKey into one compiled
//! config per namespace, published as the Secret `modelgate-config` that data planes hot-reload.

mod admin;
mod controller;
mod error;
pub mod keys;
mod leader;
mod metrics;
pub mod options;
pub mod publish;
mod queue;
mod reconcile;
mod scope;
mod served;
mod spend;
mod status;

use std::sync::Arc;

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
use tokio::sync::{mpsc, watch};

pub use options::Options;

/// The one field manager for every write (status, config Secret, generated keys).
pub const FIELD_MANAGER: &str = "modelgate-operator";
/// `app.kubernetes.io/managed-by` on everything the operator creates.
pub const MANAGED_BY: &str = "modelgate-operator";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("cannot bind the admin listener: {0}")]
    Admin(#[source] std::io::Error),
    #[error("the OS random source failed: {0}")]
    Random(String),
    #[error("cannot reach the state store: {0}")]
    State(#[source] redis::RedisError),
}

/// Runs the operator until SIGTERM or SIGINT, then stops cleanly: the current reconcile
/// finishes and the Lease is released.
pub async fn run(options: Options) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let identity = match options.identity.clone() {
        Some(identity) => identity,
        None => default_identity()?,
    };
    let (shutdown_tx, shutdown) = watch::channel(false);
    let metrics = Arc::new(metrics::Metrics::new());
    let admin = Arc::new(admin::Admin {
        metrics: metrics.clone(),
        ready: Default::default(),
    });
    let admin_addr = admin::serve(admin.clone(), options.admin_listen, shutdown.clone())
        .await
        .map_err(RunError::Admin)?;
    tracing::info!(%admin_addr, %identity, namespaces = ?options.namespaces, "operator starting");

    let (triggers_tx, triggers) = mpsc::unbounded_channel();
    let scopes = scope::Scopes::start(&client, &options.namespaces, &triggers_tx);
    let (leading, election) = leader::spawn(
        client.clone(),
        leader::LeaseConfig {
            namespace: options.lease_namespace.clone(),
            name: options.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: options.lease_duration,
            renew_interval: options.renew_interval,
        },
        shutdown.clone(),
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(identity),
        },
    );
    let spend = match &options.state {
        Some(url) => Some(
            spend::SpendReader::connect(url)
                .await
                .map_err(RunError::State)?,
        ),
        None => None,
    };
    let ctx = Arc::new(reconcile::Context {
        client,
        scopes: scopes.clone(),
        recorder,
        metrics: metrics.clone(),
        spend,
        service_account: options.service_account.clone(),
        served: Default::default(),
    });

    let mut leader_metric = leading.clone();
    let leader_metrics = metrics.clone();
    tokio::spawn(async move {
        loop {
            leader_metrics.set_leader(*leader_metric.borrow_and_update());
            if leader_metric.changed().await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });

    let mut waiting = shutdown.clone();
    tokio::select! {
        () = scopes.wait_ready() => {
            admin.mark_ready();
            tracing::info!("caches synced");
            controller::run(
                ctx,
                controller::Timing {
                    debounce: options.debounce,
                    resync_interval: options.resync_interval,
                    served_refresh: options.served_refresh_interval,
                    spend_refresh: options.state.as_ref().map(|_| options.spend_refresh_interval),
                },
                triggers,
                leading,
                shutdown,
            )
            .await;
        }
        _ = waiting.wait_for(|stop| *stop) => {}
    }
    let _ = election.await;
    tracing::info!("stopped");
    Ok(())
}

fn default_identity() -> Result<String, RunError> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "modelgate-operator".to_owned());
    let mut suffix = [0u8; 4];
    getrandom::fill(&mut suffix).map_err(|e| RunError::Random(e.to_string()))?;
    Ok(format!("{host}-{:08x}", u32::from_be_bytes(suffix)))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
