//! Keeps the webhook's certificate current: the leader issues and renews it in its Secret (see
//! [`certs::plan`]) and keeps the MutatingWebhookConfiguration's `caBundle` equal to the CAs it
//! trusts; every replica presents the serving certificate the Secret holds. With cert-manager the
//! Secret is cert-manager's: replicas only present what it holds.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString,
    api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Secret},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::watch;

use super::{
    certs::{self, Stored, Validity, layout},
    tls::ServingCert,
};
use crate::{FIELD_MANAGER, MANAGED_BY, metrics::Metrics};

#[derive(Clone, Debug)]
pub struct CertOptions {
    pub namespace: String,
    pub secret: String,
    /// Names (and IPs) the serving certificate is valid for.
    pub dns_names: Vec<String>,
    pub validity: Validity,
    /// The MutatingWebhookConfiguration whose `caBundle` the leader keeps current; none when
    /// something else (cert-manager's CA injector) does.
    pub webhook_configuration: Option<String>,
    /// The Secret is someone else's (cert-manager): present it, never write it.
    pub external: bool,
    pub check_interval: Duration,
}

/// Runs until `shutdown`: every `check_interval`, renew what needs it (as leader) and present
/// what is stored.
pub async fn run(
    client: Client,
    options: CertOptions,
    cert: Arc<ServingCert>,
    leading: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &options.namespace);
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut presented: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(options.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        let leader = *leading.borrow();
        let result = step(&secrets, &configurations, &options, leader, &metrics).await;
        match result {
            Ok(Some(data)) => present(&cert, &data, &mut presented, &metrics),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, secret = %options.secret, "webhook certificate not checked")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Cert(#[from] certs::CertError),
}

/// One check; returns the Secret's data to present, if there is a Secret.
async fn step(
    secrets: &Api<Secret>,
    configurations: &Api<MutatingWebhookConfiguration>,
    options: &CertOptions,
    leader: bool,
    metrics: &Metrics,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, StepError> {
    let secret = secrets.get_opt(&options.secret).await?;
    let data = secret.as_ref().map(data_of);
    if options.external || !leader {
        return Ok(data);
    }
    let stored = match &data {
        Some(data) => match certs::from_data(data) {
            Ok(stored) => Some(stored),
            Err(error) => {
                tracing::warn!(%error, "reissuing the webhook certificate");
                None
            }
        },
        None => None,
    };
    let configuration = match &options.webhook_configuration {
        Some(name) => configurations.get_opt(name).await?,
        None => None,
    };
    let trusted = |stored: &Stored| {
        configuration.as_ref().is_some_and(|c| {
            bundles_of(c)
                .iter()
                .all(|b| b == stored.bundle().as_bytes())
        })
    };
    let now = jiff::Timestamp::now();
    let bundle_trusted = stored.as_ref().is_some_and(trusted);
    let next = certs::plan(
        stored.as_ref(),
        &options.dns_names,
        &options.validity,
        bundle_trusted,
        now,
    )?;
    let current = match next {
        Some(next) => {
            write(secrets, options, secret.as_ref(), &next).await?;
            metrics.webhook_cert_renewed();
            tracing::info!(
                ca = %next.ca.name,
                next_ca = ?next.next.as_ref().map(|c| c.name.clone()),
                serving_not_after = %next.serving.not_after,
                "webhook certificate written"
            );
            next
        }
        None => match stored {
            Some(stored) => stored,
            None => return Ok(data),
        },
    };
    if let (Some(configuration), false) = (&configuration, trusted(&current)) {
        patch_bundle(configurations, configuration, current.bundle().as_bytes()).await?;
        tracing::info!(configuration = ?options.webhook_configuration, "webhook caBundle updated");
    }
    Ok(Some(certs::to_data(&current)))
}

fn data_of(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn bundles_of(configuration: &MutatingWebhookConfiguration) -> Vec<Vec<u8>> {
    configuration
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// Writes the Secret: created when there is none, else patched on the version read (a
/// concurrent writer makes this fail, and the next check starts over).
async fn write(
    secrets: &Api<Secret>,
    options: &CertOptions,
    existing: Option<&Secret>,
    stored: &Stored,
) -> Result<(), kube::Error> {
    let data: BTreeMap<String, ByteString> = certs::to_data(stored)
        .into_iter()
        .map(|(k, v)| (k, ByteString(v)))
        .collect();
    match existing {
        None => {
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": options.secret,
                    "labels": {
                        "app.kubernetes.io/managed-by": MANAGED_BY,
                        "app.kubernetes.io/part-of": "modelgate",
                    },
                },
                "type": "Opaque",
            }))
            .map_err(kube::Error::SerdeError)?;
            let secret = Secret {
                data: Some(data),
                ..secret
            };
            secrets.create(&PostParams::default(), &secret).await?;
        }
        Some(existing) => {
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": existing.metadata.resource_version},
                "data": data,
            });
            secrets
                .patch(
                    &options.secret,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
    }
    Ok(())
}

/// Sets every webhook's `caBundle` of the configuration, on the version read.
async fn patch_bundle(
    configurations: &Api<MutatingWebhookConfiguration>,
    configuration: &MutatingWebhookConfiguration,
    bundle: &[u8],
) -> Result<(), kube::Error> {
    let mut webhooks = configuration.webhooks.clone().unwrap_or_default();
    for webhook in &mut webhooks {
        webhook.client_config.ca_bundle = Some(ByteString(bundle.to_vec()));
    }
    let name = configuration.metadata.name.clone().unwrap_or_default();
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": configuration.metadata.resource_version},
        "webhooks": webhooks,
    });
    configurations
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Loads the serving pair when it changed.
fn present(
    cert: &ServingCert,
    data: &BTreeMap<String, Vec<u8>>,
    presented: &mut Option<Vec<u8>>,
    metrics: &Metrics,
) {
    let (Some(chain), Some(key)) = (data.get(layout::TLS_CERT), data.get(layout::TLS_KEY)) else {
        tracing::warn!("the webhook certificate Secret has no tls.crt and tls.key yet");
        return;
    };
    if presented.as_ref() == Some(chain) {
        return;
    }
    match cert.load(chain, key) {
        Ok(()) => {
            *presented = Some(chain.clone());
            if let Some(not_after) = certs::from_data(data).ok().map(|s| s.serving.not_after) {
                metrics.set_webhook_cert_not_after(not_after.as_second());
            }
            tracing::info!("webhook serving certificate loaded");
        }
        Err(error) => {
            tracing::warn!(%error, "the webhook certificate Secret holds an unusable pair")
        }
    }
}
