//! What this data plane serves, told to the operator: a `coordination.k8s.io` Lease named after
//! its pod, labelled `modelgate.io/data-plane=true`, holding the checksum it serves and renewed
//! like a heartbeat. The operator counts the live ones per namespace into each object's status,
//! so `kubectl get mg` shows whether a change reached traffic. A change of the served config is
//! reported at once; on shutdown the Lease is deleted, so a drained pod stops counting.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use modelgate_crds::common::{DATA_PLANE_LABEL, SERVED_ANNOTATION};
use tokio::sync::watch;

/// Who beats, where, how often.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    pub namespace: String,
    /// The pod's name: the Lease is `modelgate-dp-<pod>`.
    pub pod: String,
    pub interval: Duration,
}

/// Renews the Lease every interval and whenever `served` changes, until `shutdown` flips; then
/// deletes it.
pub async fn beat(
    client: Client,
    heartbeat: Heartbeat,
    mut served: watch::Receiver<Option<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &heartbeat.namespace);
    let name = format!("modelgate-dp-{}", heartbeat.pod);
    let mut tick = tokio::time::interval(heartbeat.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
            changed = served.changed() => if changed.is_err() { break },
        }
        let checksum = served.borrow_and_update().clone();
        if let Err(error) = renew(&api, &name, &heartbeat, checksum).await {
            tracing::warn!(%error, lease = %name, "cannot renew the heartbeat Lease");
        }
    }
    if let Err(error) = api.delete(&name, &DeleteParams::default()).await {
        tracing::debug!(%error, lease = %name, "heartbeat Lease not deleted");
    }
}

async fn renew(
    api: &Api<Lease>,
    name: &str,
    heartbeat: &Heartbeat,
    checksum: Option<String>,
) -> Result<(), kube::Error> {
    let duration =
        i32::try_from(heartbeat.interval.as_secs().saturating_mul(3)).unwrap_or(i32::MAX);
    let mut lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (DATA_PLANE_LABEL.to_owned(), "true".to_owned()),
                (
                    "app.kubernetes.io/part-of".to_owned(),
                    "modelgate".to_owned(),
                ),
            ])),
            annotations: checksum.map(|c| BTreeMap::from([(SERVED_ANNOTATION.to_owned(), c)])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(heartbeat.pod.clone()),
            lease_duration_seconds: Some(duration.max(1)),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    match api.get_opt(name).await? {
        Some(current) => {
            lease.metadata.resource_version = current.metadata.resource_version;
            api.replace(name, &PostParams::default(), &lease).await?;
        }
        None => {
            api.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
