//! Whether a change reached traffic: every data plane renews a heartbeat Lease holding the
//! checksum it serves; a namespace's summary counts the live ones (renewed within their
//! duration) and those serving the published checksum, and names the stale ones.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use modelgate_crds::common::SERVED_ANNOTATION;

/// The data planes of one namespace against its published config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedSummary {
    /// Live data planes serving the published checksum.
    pub serving: usize,
    /// Live data planes.
    pub live: usize,
    /// Live data planes serving something else (their pod names), sorted.
    pub stale: Vec<String>,
}

impl ServedSummary {
    pub fn of(leases: &[&Lease], published: &str, now: Timestamp) -> Self {
        let mut summary = Self::default();
        for lease in leases.iter().filter(|l| alive(l, now)) {
            summary.live += 1;
            if lease
                .annotations()
                .get(SERVED_ANNOTATION)
                .map(String::as_str)
                == Some(published)
            {
                summary.serving += 1;
            } else {
                let holder = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_else(|| lease.name_any());
                summary.stale.push(holder);
            }
        }
        summary.stale.sort();
        summary
    }

    /// `serving/live`, the printer column.
    pub fn ratio(&self) -> String {
        format!("{}/{}", self.serving, self.live)
    }
}

fn alive(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(seconds)) => {
            renewed.0 + SignedDuration::from_secs(i64::from(seconds)) > now
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::coordination::v1::LeaseSpec,
        apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    };

    use super::*;

    fn lease(pod: &str, checksum: &str, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(format!("modelgate-dp-{pod}")),
                annotations: Some(BTreeMap::from([(
                    SERVED_ANNOTATION.to_owned(),
                    checksum.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(pod.to_owned()),
                lease_duration_seconds: Some(30),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn live_data_planes_are_counted_and_stale_ones_named() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let recent = now - SignedDuration::from_secs(5);
        let lapsed = now - SignedDuration::from_secs(31);
        let leases = [
            lease("gw-a", "new", recent),
            lease("gw-b", "old", recent),
            lease("gw-c", "new", lapsed),
        ];
        let refs: Vec<&Lease> = leases.iter().collect();
        let summary = ServedSummary::of(&refs, "new", now);
        assert_eq!(
            summary,
            ServedSummary {
                serving: 1,
                live: 2,
                stale: vec!["gw-b".to_owned()]
            }
        );
        assert_eq!(summary.ratio(), "1/2");
    }
}
