//! Listeners and connections: HTTP/1.1 and h2c on the API listener, plain HTTP/1.1 on the admin
//! listener, header-read timeouts, and a graceful drain on shutdown.

mod admin;

use std::{
    convert::Infallible, future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration,
};

use http::{Request, Response};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    api::{self, AppState, ResponseBody},
    cache::{Cache, MemoryCache, RedisCache},
    config::{ConfigHandle, watch::ConfigLoader},
    limits::{
        FailMode, Limiter, MemoryStore, RedisStore, Store, StoreError, connection::SharedConnection,
    },
    provider::HttpClients,
    resilience::{Breakers, RetryBudget},
    route::signals::SignalRegistry,
    telemetry::{DecisionLog, DecisionTarget, Metrics},
};

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub config_path: PathBuf,
    /// How often the config file is checked besides its change events; `None` trusts the events.
    pub config_poll: Option<Duration>,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub decision_log: Option<DecisionTarget>,
    pub max_body_bytes: usize,
    /// Where budgets and rate limits are kept.
    pub state: StateBackend,
    pub state_fail_mode: FailMode,
    pub cache: CacheBackend,
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

/// How long a call to Redis may take before it counts as unavailable.
const STATE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a reservation lives without a settle (longer than any sane call).
const RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);
/// How often changed spend is written to the memory backend's snapshot file.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// A running gateway.
pub struct Gateway {
    api_addr: SocketAddr,
    admin_addr: SocketAddr,
    config: ConfigHandle,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The memory backend, saved once more on shutdown.
    memory: Option<Arc<MemoryStore>>,
    store: Arc<dyn Store>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the decision log: {0}")]
    DecisionLog(std::io::Error),
    #[error("cannot open the budget and rate-limit store: {0}")]
    State(#[source] StoreError),
}

impl Gateway {
    /// Loads the config (a bad one leaves the gateway unready, not dead), binds both listeners
    /// and starts serving.
    pub async fn start(options: GatewayOptions) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new());
        let config = ConfigHandle::default();
        let (shutdown, shutdown_rx) = watch::channel(false);

        let loader = Arc::new(ConfigLoader::new(
            options.config_path.clone(),
            config.clone(),
            metrics.clone(),
            Arc::new(SignalRegistry::default()),
            options.config_poll,
        ));
        let changes = loader.subscribe();
        // A bad first config leaves the gateway unready (503, /readyz), not dead.
        loader.reload_and_record().await;
        let decisions = match options.decision_log {
            Some(target) => DecisionLog::start(target, metrics.clone())
                .await
                .map_err(StartError::DecisionLog)?,
            None => DecisionLog::disabled(metrics.clone()),
        };
        let (store, memory, redis): (Arc<dyn Store>, _, _) = match &options.state {
            StateBackend::Memory { snapshot } => {
                let store = MemoryStore::open(snapshot.as_deref()).map_err(StartError::State)?;
                store.spawn_snapshots(SNAPSHOT_INTERVAL);
                (store.clone(), Some(store), None)
            }
            StateBackend::Redis { url } => {
                let store = Arc::new(
                    RedisStore::connect(url, STATE_TIMEOUT)
                        .await
                        .map_err(StartError::State)?,
                );
                (store.clone(), None, Some(store))
            }
        };
        let limiter = Limiter::new(
            store.clone(),
            options.state_fail_mode,
            RESERVATION_TTL,
            metrics.clone(),
        );
        let cache = match &options.cache {
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
                let connection = match (&redis, &options.state) {
                    (Some(store), StateBackend::Redis { url: state }) if state == url => {
                        store.connection().clone()
                    }
                    _ => SharedConnection::open(url, STATE_TIMEOUT)
                        .await
                        .map_err(StartError::State)?,
                };
                Cache::new(
                    Some(Arc::new(RedisCache::new(connection, metrics.clone()))),
                    *max_entry_bytes,
                    metrics.clone(),
                )
            }
        };
        let state = Arc::new(AppState {
            cache: Arc::new(cache),
            limiter,
            config: config.clone(),
            http: HttpClients::default(),
            metrics: metrics.clone(),
            decisions,
            max_body_bytes: options.max_body_bytes,
            breakers: Breakers::default(),
            retry_budget: RetryBudget::default(),
        });

        if let Some(redis) = &redis {
            let breakers = state.clone();
            let announcer = redis.share_cooldowns(
                Arc::new(move |cooldown| breakers.breakers.apply(cooldown)),
                metrics.clone(),
            );
            state.breakers.announce_to(announcer);
            redis.share_deployment_usage(config.clone(), metrics.clone());
        }

        let api_listener = bind(options.listen).await?;
        let admin_listener = bind(options.admin_listen).await?;
        let api_addr = local_addr(&api_listener, options.listen)?;
        let admin_addr = local_addr(&admin_listener, options.admin_listen)?;

        let api_state = state.clone();
        let api = serve(api_listener, shutdown_rx.clone(), move |req| {
            api::handle(api_state.clone(), req)
        });
        let admin_config = config.clone();
        let admin = serve(admin_listener, shutdown_rx.clone(), move |req| {
            std::future::ready(admin::handle(&admin_config, &metrics, &req))
        });
        let tasks = vec![
            tokio::spawn(api),
            tokio::spawn(admin),
            tokio::spawn(loader.watch(changes, shutdown_rx)),
        ];
        tracing::info!(%api_addr, %admin_addr, "modelgate data plane started");
        Ok(Self {
            api_addr,
            admin_addr,
            config,
            shutdown,
            tasks,
            memory,
            store,
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

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(memory) = self.memory
            && let Err(error) = memory.save_if_dirty()
        {
            tracing::warn!(%error, "cannot write the spend snapshot on shutdown");
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// Accepts connections until shutdown, then drains them.
async fn serve<F, Fut>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let service = service_fn(move |req| {
                    let response = handler(req);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing connections with requests still in flight");
    }
}
