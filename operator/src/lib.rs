//! The modelgate operator: reconciles ModelGroup, RoutingPolicy and VirtualKey into one compiled
//! config per namespace, published as the Secret `modelgate-config` that data planes hot-reload.

mod admin;
mod controller;
mod error;
pub mod inject;
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
mod webhook;

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
    #[error("cannot serve the webhook: {0}")]
    Webhook(#[source] std::io::Error),
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
        webhook_cert: Default::default(),
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
        client: client.clone(),
        scopes: scopes.clone(),
        recorder: recorder.clone(),
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
            tracing::info!("caches synced");
            if let Some(listen) = options.webhook_listen {
                let webhook = Webhook {
                    client: client.clone(),
                    scopes: scopes.clone(),
                    recorder: recorder.clone(),
                    metrics: metrics.clone(),
                    leading: leading.clone(),
                    shutdown: shutdown.clone(),
                };
                let cert = webhook.start(&options, listen).await?;
                // Not ready (so out of the webhook Service) until it has a certificate to present.
                let _ = admin.webhook_cert.set(cert);
            }
            admin.mark_ready();
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

/// What the webhook needs of the running operator.
struct Webhook {
    client: Client,
    scopes: scope::Scopes,
    recorder: Recorder,
    metrics: Arc<metrics::Metrics>,
    leading: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
}

impl Webhook {
    /// Starts certificate upkeep, the HTTPS listener and the report of pods without their
    /// sidecar; returns the certificate the listener presents.
    async fn start(
        self,
        options: &Options,
        listen: std::net::SocketAddr,
    ) -> Result<Arc<webhook::tls::ServingCert>, RunError> {
        let cert = Arc::new(webhook::tls::ServingCert::default());
        let cert_options = webhook::rotation::CertOptions {
            namespace: options.lease_namespace.clone(),
            secret: options.webhook_secret.clone(),
            dns_names: options.webhook_dns_names.clone(),
            validity: webhook::certs::Validity {
                ca: options.webhook_ca_validity,
                serving: options.webhook_cert_validity,
            },
            webhook_configuration: (!options.webhook_cert_external)
                .then(|| options.webhook_configuration.clone()),
            external: options.webhook_cert_external,
            check_interval: options.webhook_cert_check_interval,
        };
        tokio::spawn(webhook::rotation::run(
            self.client.clone(),
            cert_options,
            cert.clone(),
            self.leading.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
        let settings = sidecar_settings(options, &self.client).await;
        tracing::info!(native = settings.native, image = %settings.image, "sidecar injection on");
        let injector = Arc::new(webhook::review::Injector {
            settings: settings.clone(),
            scopes: self.scopes.clone(),
            recorder: self.recorder.clone(),
            metrics: self.metrics.clone(),
        });
        let webhook_addr = webhook::serve(listen, cert.clone(), injector, self.shutdown.clone())
            .await
            .map_err(RunError::Webhook)?;
        tracing::info!(%webhook_addr, "webhook listening");
        let gaps = webhook::gaps::Gaps {
            client: self.client,
            namespaces: options.namespaces.clone(),
            scopes: self.scopes,
            settings,
            recorder: self.recorder,
            metrics: self.metrics,
            interval: options.injection_report_interval,
        };
        tokio::spawn(gaps.run(self.leading, self.shutdown));
        Ok(cert)
    }
}

/// The sidecar the flags describe; `--sidecar-native auto` asks the API server's version
/// (native sidecars are on by default from 1.29).
async fn sidecar_settings(options: &Options, client: &Client) -> inject::sidecar::SidecarSettings {
    let native = match options.sidecar_native.as_str() {
        "true" => true,
        "false" => false,
        _ => match client.apiserver_version().await {
            Ok(version) => {
                let minor: u32 = version
                    .minor
                    .trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap_or(0);
                version.major == "1" && minor >= 29
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the API server version; injecting plain sidecar containers");
                false
            }
        },
    };
    inject::sidecar::SidecarSettings {
        image: options.sidecar_image.clone(),
        pull_policy: options.sidecar_image_pull_policy.clone(),
        proxy_port: options.sidecar_proxy_port,
        admin_port: options.sidecar_admin_port,
        cpu_request: options.sidecar_cpu_request.clone(),
        memory_request: options.sidecar_memory_request.clone(),
        cpu_limit: options.sidecar_cpu_limit.clone(),
        memory_limit: options.sidecar_memory_limit.clone(),
        native,
        config_secret: publish::CONFIG_SECRET.to_owned(),
        credentials_secret: publish::CREDENTIALS_SECRET.to_owned(),
        drain_seconds: options.sidecar_drain_seconds,
        extra_args: options.sidecar_extra_args.clone(),
    }
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
