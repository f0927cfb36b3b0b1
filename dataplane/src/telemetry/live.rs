//! Series read at scrape time from the gateway's live state rather than counted on the request
//! path: requests in flight per deployment, breaker states per org and deployment, the config
//! being served, and the build. The gateway hands in a [`LiveSource`] once it has that state.

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{family::Family, gauge::Gauge},
};

/// A deployment of the served config: its group's id and its own.
#[derive(Clone, Debug)]
pub struct DeploymentRef {
    pub group: Arc<str>,
    pub deployment: Arc<str>,
}

/// Where the live series come from.
pub trait LiveSource: Send + Sync + 'static {
    /// Requests in flight for each deployment of the current config.
    fn in_flight(&self) -> Vec<(DeploymentRef, i64)>;
    /// (org, deployment, state) of every breaker of a served deployment that has seen traffic:
    /// 0 closed, 1 half-open, 2 open.
    fn breaker_states(&self) -> Vec<(String, DeploymentRef, i64)>;
    /// The checksum of the config being served.
    fn config_checksum(&self) -> Option<String>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentLabels {
    group: String,
    deployment: String,
}

impl From<DeploymentRef> for DeploymentLabels {
    fn from(at: DeploymentRef) -> Self {
        Self {
            group: at.group.to_string(),
            deployment: at.deployment.to_string(),
        }
    }
}

/// The group label lets an alert ask whether every link of a group is open.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    org: String,
    #[prometheus(flatten)]
    at: DeploymentLabels,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChecksumLabels {
    checksum: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The collector registered with the registry; empty until the gateway sets its source.
#[derive(Default, Clone)]
pub(super) struct Live(pub(super) Arc<OnceLock<Box<dyn LiveSource>>>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

fn gauges<L, I>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: I,
) -> std::fmt::Result
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug,
    I: IntoIterator<Item = (L, i64)>,
{
    let family = Family::<L, Gauge>::default();
    for (labels, value) in rows {
        family.get_or_create(&labels).set(value);
    }
    let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
    family.encode(metric)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        gauges(
            &mut encoder,
            "build_info",
            "The running build (always 1)",
            [(
                BuildLabels {
                    version: env!("CARGO_PKG_VERSION"),
                },
                1,
            )],
        )?;
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        gauges(
            &mut encoder,
            "config_info",
            "The checksum of the config being served (always 1)",
            source
                .config_checksum()
                .map(|checksum| (ChecksumLabels { checksum }, 1)),
        )?;
        gauges(
            &mut encoder,
            "deployment_in_flight",
            "Requests in flight per group and deployment (streams until they end), on this replica",
            source
                .in_flight()
                .into_iter()
                .map(|(at, count)| (DeploymentLabels::from(at), count)),
        )?;
        gauges(
            &mut encoder,
            "breaker_state",
            "Circuit breaker state per org, group and deployment: 0 closed, 1 half-open, 2 open",
            source
                .breaker_states()
                .into_iter()
                .map(|(org, at, state)| (BreakerLabels { org, at: at.into() }, state)),
        )
    }
}
