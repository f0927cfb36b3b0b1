//! Command-line flags (each also readable from the environment, the way a Deployment sets them).

use std::{net::SocketAddr, time::Duration};

use clap::Parser;

#[derive(Clone, Debug, Parser)]
#[command(name = "modelgate-operator", version, about)]
pub struct Options {
    /// Namespaces to reconcile (repeat, or comma-separated); all namespaces when empty.
    #[arg(
        long = "namespace",
        env = "MODELGATE_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "MODELGATE_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,

    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "modelgate-system")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "MODELGATE_LEASE_NAME",
        default_value = "modelgate-operator"
    )]
    pub lease_name: String,

    /// This replica's identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a Lease stays valid without renewal before another replica may take it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often the leader renews the Lease, and standbys retry.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    pub renew_interval: Duration,

    /// Quiet time after a change before a namespace is recompiled, so a burst of applies
    /// becomes one publish.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Every namespace is reconciled at least this often, even with no change observed.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// How often lapsed data-plane heartbeats are looked for (the `Served` status).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub served_refresh_interval: Duration,

    /// The data planes' shared state store (`redis://host:port/db`): VirtualKey status then shows
    /// spend and the budget left this period.
    #[arg(long, env = "MODELGATE_STATE")]
    pub state: Option<String>,

    /// How often spend in VirtualKey status is refreshed (with `--state`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub spend_refresh_interval: Duration,

    /// This operator's ServiceAccount as `namespace:name`, named in the fix a status gives when
    /// a tenant namespace has no RoleBinding for it.
    #[arg(long, env = "MODELGATE_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,

    /// Log format: `json` or `text`.
    #[arg(long, env = "MODELGATE_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    modelgate_crds::common::DurationString::from(text)
        .parse()
        .map_err(|e| e.to_string())
}
