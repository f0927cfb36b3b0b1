//! The composition root: builds the config loader, the stores, the cache, fleet sharing and the
//! provider clients, hands them to the pipeline, and serves the front doors and the admin
//! endpoints on their own listeners.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use crate::{
    api::{self, Api, Intake},
    cache::{Cache, MemoryCache, RedisCache},
    config::{
        ConfigHandle, Snapshot,
        reload::Reloader,
        source::{self, ConfigSource, SourceError},
    },
    decision::{DecisionLog, DecisionTarget},
    finish::Sinks,
    fleet::{self, SharedConnection},
    limits::{FailMode, Limiter, MemoryStore, RedisStore, Store, StoreError},
    pipeline::Services,
    provider::HttpClients,
    resilience::{Breakers, RetryBudget},
    server::{self, BindError, ConnectionLimits, Lifecycle, admin},
    signals::SignalRegistry,
    telemetry::{DeploymentRef, LiveSource, Metrics, Otel, OtelOptions},
};

/// How long a call to Redis may take before it counts as unavailable.
const STATE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a reservation lives without a settle (longer than any sane call).
const RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);
/// After the grace, how long the explicit endings get to reach their clients.
const FINAL_WRITES: Duration = Duration::from_secs(2);
/// How often changed spend is written to the memory backend's snapshot file.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub config: ConfigSource,
    /// How often a followed file is checked besides its change events; `None` trusts the events.
    pub config_poll: Option<Duration>,
    /// On shutdown, how long requests in flight get to finish (counted from the shutdown);
    /// after it, what is still open ends with an explicit error.
    pub drain: Duration,
    /// On shutdown, how long new connections are still served while `/readyz` already says
    /// 503, so that load balancers and Service endpoints stop sending first.
    pub drain_delay: Duration,
    /// What a client may hold: time to send a request, connections, requests in flight.
    pub clients: ClientLimits,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub decision_log: Option<DecisionTarget>,
    pub max_body_bytes: usize,
    /// Where budgets and rate limits are kept.
    pub state: StateBackend,
    pub state_fail_mode: FailMode,
    pub cache: CacheBackend,
    /// Whether `GET /api/public/models` lists the models without a key.
    pub public_catalog: bool,
    /// Where spans and the GenAI metrics go over OTLP; `None` exports nothing.
    pub otel: Option<OtelOptions>,
}

impl GatewayOptions {
    /// Serves `config_path` on free loopback ports with every other setting at its default:
    /// what tests and embedders start from.
    pub fn local(config_path: PathBuf) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            config: ConfigSource::File(config_path),
            config_poll: None,
            drain: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            clients: ClientLimits::default(),
            listen: loopback,
            admin_listen: loopback,
            decision_log: None,
            max_body_bytes: 32 * 1024 * 1024,
            state: StateBackend::default(),
            state_fail_mode: FailMode::Closed,
            cache: CacheBackend::default(),
            public_catalog: true,
            otel: None,
        }
    }
}

/// What one client may hold of the gateway.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// A request's head must arrive within this.
    pub header_read: Duration,
    /// A request's body must arrive within this (408 after).
    pub body_read: Duration,
    /// Open connections on the API listener (past it: 503 with `Retry-After`).
    pub max_connections: usize,
    /// Requests in flight, streams included (past it: 503 with `Retry-After`).
    pub max_in_flight: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(30),
            body_read: Duration::from_secs(60),
            max_connections: 10_000,
            max_in_flight: 4_096,
        }
    }
}

/// Where response-cache entries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    /// No caching at all, whatever the policies say.
    Off,
    /// In this process, bounded by `max_bytes`.
    Memory {
        max_bytes: u64,
        max_entry_bytes: usize,
    },
    /// In Redis (`redis://host:port/db`), shared by the fleet.
    Redis { url: String, max_entry_bytes: usize },
}

impl Default for CacheBackend {
    fn default() -> Self {
        Self::Memory {
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The store of budgets and rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// In this process (one replica); spend saved to the snapshot file when one is given.
    Memory { snapshot: Option<PathBuf> },
    /// Shared by every replica (`redis://host:port/db`).
    Redis { url: String },
}

impl Default for StateBackend {
    fn default() -> Self {
        Self::Memory { snapshot: None }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot open the decision log: {0}")]
    DecisionLog(std::io::Error),
    #[error("cannot open the budget and rate-limit store: {0}")]
    State(#[source] StoreError),
    #[error(transparent)]
    Config(#[from] SourceError),
    #[error("cannot set up OpenTelemetry export: {0}")]
    Otel(String),
}

/// A running gateway.
pub struct Gateway {
    api_addr: SocketAddr,
    admin_addr: SocketAddr,
    config: ConfigHandle,
    /// Stops the config source and the other background tasks.
    shutdown: watch::Sender<bool>,
    lifecycle: Lifecycle,
    drain: Duration,
    drain_delay: Duration,
    listeners: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    /// The memory backend, saved once more on shutdown.
    memory: Option<Arc<MemoryStore>>,
    /// Flushed on shutdown.
    otel: Option<Arc<Otel>>,
    store: Arc<dyn Store>,
}

/// The limit store, opened.
struct State {
    store: Arc<dyn Store>,
    memory: Option<Arc<MemoryStore>>,
    redis: Option<Arc<RedisStore>>,
}

impl Gateway {
    /// Loads the config (a bad one leaves the gateway unready, not dead), binds both listeners
    /// and starts serving.
    pub async fn start(options: GatewayOptions) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new());
        let config = ConfigHandle::default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let reloader = Arc::new(Reloader::new(
            config.clone(),
            metrics.clone(),
            Arc::new(SignalRegistry::default()),
        ));
        // A bad first config leaves the gateway unready (503, /readyz), not dead.
        let source = source::start(
            &options.config,
            reloader,
            metrics.clone(),
            options.config_poll,
            shutdown_rx.clone(),
        )
        .await?;
        let decisions = match options.decision_log.clone() {
            Some(target) => DecisionLog::start(target, metrics.clone())
                .await
                .map_err(StartError::DecisionLog)?,
            None => DecisionLog::disabled(metrics.clone()),
        };
        let state = open_state(&options.state).await?;
        let lifecycle = Lifecycle::default();
        let cache = open_cache(&options, &state, &metrics).await?;
        let otel = match &options.otel {
            Some(otel) => Some(Arc::new(
                Otel::start(otel, tokio::runtime::Handle::current()).map_err(StartError::Otel)?,
            )),
            None => None,
        };
        let services = Services {
            config: config.clone(),
            limiter: Limiter::new(
                state.store.clone(),
                options.state_fail_mode,
                RESERVATION_TTL,
                metrics.clone(),
            ),
            http: HttpClients::default(),
            breakers: Breakers::default(),
            retry_budget: RetryBudget::default(),
            sinks: Sinks {
                metrics: metrics.clone(),
                decisions,
                cache: Arc::new(cache),
                ended: lifecycle.ended(),
                otel: otel.clone(),
            },
        };
        let api = Arc::new(Api {
            services,
            intake: Intake {
                max_body_bytes: options.max_body_bytes,
                body_read: options.clients.body_read,
            },
            in_flight: Arc::new(Semaphore::new(options.clients.max_in_flight)),
            ended: lifecycle.ended(),
            public_catalog: options.public_catalog,
        });
        metrics.set_live(Box::new(LiveState(Arc::downgrade(&api))));
        if let Some(redis) = &state.redis {
            share_with_fleet(redis.connection(), &api, &config, &metrics);
        }

        let (api_listener, api_addr) = server::bind(options.listen).await?;
        let (admin_listener, admin_addr) = server::bind(options.admin_listen).await?;
        let limits = ConnectionLimits {
            header_read: options.clients.header_read,
            max_connections: options.clients.max_connections,
        };
        // The listeners wait for what is in flight until the grace is over, and a little
        // longer for the explicit endings written then to reach their clients.
        let drain = options.drain.saturating_sub(options.drain_delay) + FINAL_WRITES;
        let public = server::serve(
            api_listener,
            lifecycle.closed(),
            drain,
            limits,
            move |req| api::handle(api.clone(), req),
        );
        let admin_config = config.clone();
        let status = source.status;
        let admin_lifecycle = lifecycle.clone();
        // The admin listener stays up for the whole shutdown: `/readyz` says it is draining.
        let admin = server::serve(
            admin_listener,
            shutdown_rx.clone(),
            Duration::ZERO,
            ConnectionLimits::default(),
            move |req| {
                std::future::ready(admin::handle(
                    &admin_config,
                    &status,
                    &metrics,
                    admin_lifecycle.is_draining(),
                    &req,
                ))
            },
        );
        let listeners = vec![tokio::spawn(public)];
        let mut tasks = vec![tokio::spawn(admin)];
        tasks.extend(source.tasks);
        tracing::info!(%api_addr, %admin_addr, "modelgate data plane started");
        Ok(Self {
            api_addr,
            admin_addr,
            config,
            shutdown,
            lifecycle,
            drain: options.drain,
            drain_delay: options.drain_delay,
            listeners,
            tasks,
            memory: state.memory,
            store: state.store,
            otel,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The budget and rate-limit store, for tests and tools that read spend.
    pub fn limits_store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current config, for readiness checks in tests and tools.
    pub fn config(&self) -> &ConfigHandle {
        &self.config
    }

    /// Shuts down in phases: `/readyz` says 503 at once while new connections are still served
    /// for the drain delay; then the API listener stops accepting and requests in flight finish,
    /// until the grace (`drain`, from now) is over; what is still open then ends with an
    /// explicit error (a stream with its API's error event), and the rest stops.
    pub async fn shutdown(self) {
        let started = tokio::time::Instant::now();
        self.lifecycle.drain();
        tracing::info!(delay = ?self.drain_delay, grace = ?self.drain, "draining");
        tokio::time::sleep(self.drain_delay).await;
        self.lifecycle.close();
        let lifecycle = self.lifecycle.clone();
        let grace_over = started + self.drain;
        let ender = tokio::spawn(async move {
            tokio::time::sleep_until(grace_over).await;
            lifecycle.end();
        });
        for listener in self.listeners {
            let _ = listener.await;
        }
        ender.abort();
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(memory) = self.memory
            && let Err(error) = memory.save_if_dirty()
        {
            tracing::warn!(%error, "cannot write the spend snapshot on shutdown");
        }
        if let Some(otel) = self.otel {
            // The SDK's shutdown blocks until the last export is done, and that export runs on
            // this runtime: wait for it from a blocking thread.
            let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
        }
    }
}

async fn open_state(backend: &StateBackend) -> Result<State, StartError> {
    Ok(match backend {
        StateBackend::Memory { snapshot } => {
            let store = MemoryStore::open(snapshot.as_deref()).map_err(StartError::State)?;
            store.spawn_snapshots(SNAPSHOT_INTERVAL);
            State {
                store: store.clone(),
                memory: Some(store),
                redis: None,
            }
        }
        StateBackend::Redis { url } => {
            let store = Arc::new(
                RedisStore::connect(url, STATE_TIMEOUT)
                    .await
                    .map_err(StartError::State)?,
            );
            State {
                store: store.clone(),
                memory: None,
                redis: Some(store),
            }
        }
    })
}

async fn open_cache(
    options: &GatewayOptions,
    state: &State,
    metrics: &Arc<Metrics>,
) -> Result<Cache, StartError> {
    Ok(match &options.cache {
        CacheBackend::Off => Cache::new(None, 0, metrics.clone()),
        CacheBackend::Memory {
            max_bytes,
            max_entry_bytes,
        } => Cache::new(
            Some(Arc::new(MemoryCache::new(*max_bytes))),
            *max_entry_bytes,
            metrics.clone(),
        ),
        CacheBackend::Redis {
            url,
            max_entry_bytes,
        } => {
            // The same Redis as the limits shares their connection.
            let connection = match (&state.redis, &options.state) {
                (Some(store), StateBackend::Redis { url: state }) if state == url => {
                    store.connection().clone()
                }
                _ => SharedConnection::open(url, STATE_TIMEOUT)
                    .await
                    .map_err(|e| StartError::State(e.into()))?,
            };
            Cache::new(
                Some(Arc::new(RedisCache::new(connection, metrics.clone()))),
                *max_entry_bytes,
                metrics.clone(),
            )
        }
    })
}

/// With shared state, breaker cooldowns and deployment quotas are shared with the fleet.
fn share_with_fleet(
    connection: &SharedConnection,
    api: &Arc<Api>,
    config: &ConfigHandle,
    metrics: &Arc<Metrics>,
) {
    let receiver = api.clone();
    let announcer = fleet::share_cooldowns(
        connection.clone(),
        Arc::new(move |cooldown| receiver.services.breakers.apply(cooldown)),
        metrics.clone(),
    );
    api.services.breakers.announce_to(announcer);
    fleet::share_deployment_usage(connection.clone(), config.clone(), metrics.clone());
}

/// What the metrics read at scrape time: the served config's deployments and the breakers.
/// Weak, so the metrics (which the API holds) never keep the API alive.
struct LiveState(std::sync::Weak<Api>);

impl LiveSource for LiveState {
    fn in_flight(&self) -> Vec<(DeploymentRef, i64)> {
        let Some(snapshot) = self.snapshot() else {
            return Vec::new();
        };
        snapshot
            .groups()
            .iter()
            .flat_map(|g| g.deployments.iter().map(move |d| (g, d)))
            .map(|(g, d)| {
                let count = d.signals.values().in_flight;
                (
                    DeploymentRef {
                        group: g.id.clone(),
                        deployment: d.id.clone(),
                    },
                    i64::try_from(count).unwrap_or(i64::MAX),
                )
            })
            .collect()
    }

    fn breaker_states(&self) -> Vec<(String, DeploymentRef, i64)> {
        let (Some(api), Some(snapshot)) = (self.0.upgrade(), self.snapshot()) else {
            return Vec::new();
        };
        let group_of: HashMap<&str, &Arc<str>> = snapshot
            .groups()
            .iter()
            .flat_map(|g| g.deployments.iter().map(move |d| (&*d.id, &g.id)))
            .collect();
        api.services
            .breakers
            .states(tokio::time::Instant::now())
            .into_iter()
            .filter_map(|(org, deployment, state)| {
                // A breaker of a deployment no longer served says nothing about routing.
                let group = Arc::clone(group_of.get(&*deployment)?);
                Some((org, DeploymentRef { group, deployment }, state))
            })
            .collect()
    }

    fn config_checksum(&self) -> Option<String> {
        Some(self.snapshot()?.checksum().to_owned())
    }
}

impl LiveState {
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.0.upgrade()?.services.config.current()
    }
}
