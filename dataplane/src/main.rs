//! `modelgate-dataplane`: runs the gateway from a config file until SIGINT/SIGTERM.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser, Subcommand};
use modelgate_dataplane::{
    CacheBackend, ClientLimits, Gateway, GatewayOptions, StateBackend,
    config::source::{ClusterSource, ConfigSource},
    decision::DecisionTarget,
    limits::FailMode,
    route::explain::replay,
    telemetry::OtelOptions,
};
use tracing_subscriber::EnvFilter;

/// The modelgate data plane: an OpenAI-compatible LLM gateway.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file: a compiled config (JSON) or a multi-document YAML of ModelGroup,
    /// RoutingPolicy, VirtualKey, Secret and Namespace manifests. Reloaded when it changes.
    /// Required unless `--config-secret` (or a subcommand) is given.
    #[arg(long, env = "MODELGATE_CONFIG", conflicts_with = "config_secret")]
    config: Option<PathBuf>,
    /// In a cluster: the namespace's config Secret (`modelgate-config`), watched through the
    /// Kubernetes API (in-cluster credentials, or KUBECONFIG).
    #[arg(long, env = "MODELGATE_CONFIG_SECRET")]
    config_secret: Option<String>,
    /// The namespace of the config Secret and of the heartbeat Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// With `--config-secret`: where the credentials Secret (`modelgate-credentials`) is
    /// mounted, holding `credentials.json`.
    #[arg(long, env = "MODELGATE_CREDENTIALS_DIR")]
    credentials_dir: Option<PathBuf>,
    /// With `--config-secret`: this pod's name; the data plane then renews a heartbeat Lease
    /// saying which config it serves.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Seconds between heartbeats (a Lease lapses after three missed ones).
    #[arg(long, env = "MODELGATE_HEARTBEAT_SECONDS", default_value_t = 10)]
    heartbeat_seconds: u64,
    /// On SIGTERM, seconds requests in flight get to finish before the rest are ended (with an
    /// explicit error; a stream with its API's error event).
    #[arg(long, env = "MODELGATE_DRAIN_SECONDS", default_value_t = 30)]
    drain_seconds: u64,
    /// On SIGTERM, seconds new connections are still served while /readyz already says 503
    /// (for load balancers to stop sending first; a Kubernetes preStop sleep does the same).
    #[arg(long, env = "MODELGATE_DRAIN_DELAY_SECONDS", default_value_t = 0)]
    drain_delay_seconds: u64,
    /// Seconds a client gets to send a request's head.
    #[arg(
        long,
        env = "MODELGATE_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    header_read_timeout_seconds: u64,
    /// Seconds a client gets to send a request's body (408 after).
    #[arg(
        long,
        env = "MODELGATE_BODY_READ_TIMEOUT_SECONDS",
        default_value_t = 60
    )]
    body_read_timeout_seconds: u64,
    /// Open connections on the API listener; past it each request is answered 503 with
    /// Retry-After.
    #[arg(long, env = "MODELGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Requests in flight (streams included); past it a request is answered 503 with
    /// Retry-After.
    #[arg(long, env = "MODELGATE_MAX_IN_FLIGHT", default_value_t = 4_096)]
    max_in_flight: usize,
    /// Threads that serve requests. 1 runs everything on one thread with no cross-thread
    /// wake-ups (the cheapest per request; what an injected sidecar uses); 0 starts one per
    /// available core (a shared gateway).
    #[arg(long, env = "MODELGATE_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
    /// Seconds between checks of the config file besides its change events (a backstop for
    /// filesystems that report none); 0 relies on the events alone.
    #[arg(long, env = "MODELGATE_CONFIG_POLL_SECONDS", default_value_t = 10)]
    config_poll_seconds: u64,
    /// Address of the OpenAI-compatible API.
    #[arg(long, env = "MODELGATE_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics; keep it off the public network.
    #[arg(long, env = "MODELGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9464")]
    admin_listen: SocketAddr,
    /// Write one JSON line per request: `-` for stdout, or a file path (appended).
    #[arg(long, env = "MODELGATE_DECISION_LOG")]
    decision_log: Option<String>,
    /// Largest accepted request body.
    #[arg(long, env = "MODELGATE_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Where budgets and rate limits live: `memory` (this process) or `redis://host:port/db`
    /// (shared by every replica).
    #[arg(long, env = "MODELGATE_STATE", default_value = "memory")]
    state: String,
    /// With `--state memory`: a file that keeps settled spend across restarts.
    #[arg(long, env = "MODELGATE_STATE_FILE")]
    state_file: Option<PathBuf>,
    /// When the state store is unreachable: `closed` answers 503 with Retry-After, `open`
    /// serves without budgets and rate limits (counted and logged).
    #[arg(long, env = "MODELGATE_STATE_FAIL_MODE", value_parser = ["closed", "open"], default_value = "closed")]
    state_fail_mode: String,
    /// The response cache: `memory` (this process), `state` (the `--state` Redis),
    /// `redis://host:port/db`, or `off`.
    #[arg(long, env = "MODELGATE_CACHE", default_value = "memory")]
    cache: String,
    /// With `--cache memory`: the most bytes the cache holds (least recently used go first).
    #[arg(long, env = "MODELGATE_CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    cache_max_bytes: u64,
    /// Answers larger than this are not cached.
    #[arg(long, env = "MODELGATE_CACHE_MAX_ENTRY_BYTES", default_value_t = 4 * 1024 * 1024)]
    cache_max_entry_bytes: usize,
    /// Serve the public model catalog, `GET /api/public/models`, without a key: `on`, `off`, or
    /// `auto` (on with `--config`, off in a cluster, where one gateway serves several tenants).
    #[arg(long, env = "MODELGATE_PUBLIC_CATALOG", value_parser = ["auto", "on", "off"], default_value = "auto")]
    public_catalog: String,
    /// Export traces and the GenAI metrics over OTLP/HTTP to this base URL (e.g.
    /// `http://otel-collector:4318`); unset exports nothing. `OTEL_SERVICE_NAME` (default
    /// `modelgate`) and `OTEL_RESOURCE_ATTRIBUTES` describe this process.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// How long finished spans wait to be batched, in milliseconds.
    #[arg(long, env = "OTEL_BSP_SCHEDULE_DELAY", default_value_t = 5000)]
    otel_bsp_schedule_delay: u64,
    /// How often the GenAI metrics are exported, in milliseconds.
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL", default_value_t = 60000)]
    otel_metric_export_interval: u64,
    /// Log format on stderr.
    #[arg(long, env = "MODELGATE_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Re-derive every plan in a decision log (a file, or stdin) from its recorded signals and
    /// seed, and report the records whose plan comes out different.
    Explain {
        /// Decision log to read; stdin when absent.
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Explain { file }) = &args.command {
        return explain(file.as_deref());
    }
    let Some(config) = config_source(&args) else {
        Args::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--config <CONFIG> or --config-secret <NAME> is required to serve",
            )
            .exit()
    };
    init_tracing(&args.log_format);
    let runtime = match runtime(args.worker_threads) {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args, config))
}

/// One thread: a current-thread runtime, whose tasks never hop threads. More: the work-stealing
/// scheduler, `0` sized to the available cores.
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

/// A file, or in a cluster the config Secret.
fn config_source(args: &Args) -> Option<ConfigSource> {
    if let Some(path) = &args.config {
        return Some(ConfigSource::File(path.clone()));
    }
    let secret = args.config_secret.clone()?;
    let heartbeat = Duration::from_secs(args.heartbeat_seconds.max(1));
    Some(ConfigSource::Kubernetes(ClusterSource {
        namespace: args.namespace.clone(),
        secret,
        credentials_dir: args.credentials_dir.clone(),
        heartbeat: args.pod_name.clone().map(|pod| (pod, heartbeat)),
    }))
}

async fn run(args: Args, config: ConfigSource) -> ExitCode {
    let decision_log = args.decision_log.map(|target| match target.as_str() {
        "-" => DecisionTarget::Stdout,
        path => DecisionTarget::File(PathBuf::from(path)),
    });
    let options = GatewayOptions {
        config,
        config_poll: Some(Duration::from_secs(args.config_poll_seconds)),
        drain: Duration::from_secs(args.drain_seconds),
        drain_delay: Duration::from_secs(args.drain_delay_seconds),
        clients: ClientLimits {
            header_read: Duration::from_secs(args.header_read_timeout_seconds.max(1)),
            body_read: Duration::from_secs(args.body_read_timeout_seconds.max(1)),
            max_connections: args.max_connections.max(1),
            max_in_flight: args.max_in_flight.max(1),
        },
        listen: args.listen,
        admin_listen: args.admin_listen,
        decision_log,
        max_body_bytes: args.max_body_bytes,
        cache: match args.cache.as_str() {
            "off" => CacheBackend::Off,
            "memory" => CacheBackend::Memory {
                max_bytes: args.cache_max_bytes,
                max_entry_bytes: args.cache_max_entry_bytes,
            },
            "state" if args.state != "memory" => CacheBackend::Redis {
                url: args.state.clone(),
                max_entry_bytes: args.cache_max_entry_bytes,
            },
            "state" => CacheBackend::Memory {
                max_bytes: args.cache_max_bytes,
                max_entry_bytes: args.cache_max_entry_bytes,
            },
            url => CacheBackend::Redis {
                url: url.to_owned(),
                max_entry_bytes: args.cache_max_entry_bytes,
            },
        },
        otel: args
            .otlp_endpoint
            .filter(|endpoint| !endpoint.is_empty())
            .map(|endpoint| OtelOptions {
                batch_delay: Duration::from_millis(args.otel_bsp_schedule_delay),
                metrics_interval: Duration::from_millis(args.otel_metric_export_interval),
                ..OtelOptions::new(endpoint)
            }),
        public_catalog: match args.public_catalog.as_str() {
            "on" => true,
            "off" => false,
            _ => args.config.is_some(),
        },
        state: if args.state == "memory" {
            StateBackend::Memory {
                snapshot: args.state_file,
            }
        } else {
            StateBackend::Redis { url: args.state }
        },
        state_fail_mode: if args.state_fail_mode == "open" {
            FailMode::Open
        } else {
            FailMode::Closed
        },
    };
    let gateway = match Gateway::start(options).await {
        Ok(g) => g,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    // Tools and tests read these two lines to find the ports (port 0 picks a free one).
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "modelgate-dataplane api listening on http://{}",
        gateway.api_addr()
    );
    let _ = writeln!(
        stdout,
        "modelgate-dataplane admin listening on http://{}",
        gateway.admin_addr()
    );
    let _ = stdout.flush();
    drop(stdout);

    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    gateway.shutdown().await;
    ExitCode::SUCCESS
}

fn explain(file: Option<&std::path::Path>) -> ExitCode {
    let replay = match file {
        Some(path) => std::fs::File::open(path).and_then(|f| replay(std::io::BufReader::new(f))),
        None => replay(std::io::stdin().lock()),
    };
    let replay = match replay {
        Ok(r) => r,
        Err(error) => {
            eprintln!("explain: {error}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    for (line, request_id, detail) in &replay.mismatches {
        let _ = writeln!(out, "mismatch at line {line} ({request_id}): {detail}");
    }
    let _ = writeln!(
        out,
        "replayed {} of {} decision records: {} mismatch(es)",
        replay.replayed,
        replay.records,
        replay.mismatches.len()
    );
    if replay.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
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
    let _ = ctrl_c.await;
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
