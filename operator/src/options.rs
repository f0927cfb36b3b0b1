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

    /// Serve the sidecar injection webhook (HTTPS) on this address; no webhook when absent.
    #[arg(long, env = "MODELGATE_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,

    /// The Secret (in the operator's namespace) holding the webhook's CA and serving
    /// certificate.
    #[arg(long, default_value = "modelgate-webhook-tls")]
    pub webhook_secret: String,

    /// The MutatingWebhookConfiguration whose `caBundle` the operator keeps current.
    #[arg(long, default_value = "modelgate-injector")]
    pub webhook_configuration: String,

    /// Names (and IP addresses) the webhook's serving certificate is valid for: the webhook
    /// Service's DNS names (repeat, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub webhook_dns_names: Vec<String>,

    /// How long a serving certificate is valid; it is renewed at two thirds of that.
    #[arg(long, default_value = "2160h", value_parser = parse_duration)]
    pub webhook_cert_validity: Duration,

    /// How long the webhook CA is valid; a successor joins the trusted bundle at two thirds of
    /// that and signs from five sixths.
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    pub webhook_ca_validity: Duration,

    /// How often certificates are checked for renewal (and the Secret re-read).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub webhook_cert_check_interval: Duration,

    /// The certificate Secret is written by something else (cert-manager): present it, never
    /// issue, renew or patch a `caBundle`.
    #[arg(long)]
    pub webhook_cert_external: bool,

    /// How often pods without their sidecar are counted (and reported with an Event).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub injection_report_interval: Duration,

    /// The image of the injected sidecar.
    #[arg(
        long,
        env = "MODELGATE_SIDECAR_IMAGE",
        default_value = "ghcr.io/modelgate/modelgate:0.1.0"
    )]
    pub sidecar_image: String,

    #[arg(long, default_value = "IfNotPresent")]
    pub sidecar_image_pull_policy: String,

    /// The loopback port of the sidecar's API (a pod may set `modelgate.io/proxy-port`).
    #[arg(long, default_value_t = 4000)]
    pub sidecar_proxy_port: u16,

    /// The port of the sidecar's health and metrics endpoints (`modelgate.io/admin-port`).
    #[arg(long, default_value_t = 9464)]
    pub sidecar_admin_port: u16,

    #[arg(long, default_value = "50m")]
    pub sidecar_cpu_request: String,

    #[arg(long, default_value = "64Mi")]
    pub sidecar_memory_request: String,

    #[arg(long, default_value = "1")]
    pub sidecar_cpu_limit: String,

    #[arg(long, default_value = "256Mi")]
    pub sidecar_memory_limit: String,

    /// Inject a native sidecar (an init container with `restartPolicy: Always`): `auto` asks
    /// the API server (1.29 and newer have them), `true` or `false` decides.
    #[arg(long, default_value = "auto", value_parser = ["auto", "true", "false"])]
    pub sidecar_native: String,

    /// Seconds a sidecar gives requests in flight after SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub sidecar_drain_seconds: u32,

    /// More flags for the sidecar's data plane (repeat, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sidecar_extra_args: Vec<String>,

    /// Log format: `json` or `text`.
    #[arg(long, env = "MODELGATE_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    modelgate_crds::common::DurationString::from(text)
        .parse()
        .map_err(|e| e.to_string())
}
