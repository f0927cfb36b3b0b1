//! A fake LLM provider for tests and benchmarks: an upstream on a loopback port that speaks every
//! provider's native wire format (OpenAI, Azure, Anthropic, Gemini and Vertex, Bedrock, Cohere,
//! Mistral, DeepSeek; chosen by the request path), with typed scripted faults and a record of
//! every request it received.
//!
//! Other providers' wire formats are served by path (see `native`): Cohere under `/v2/` and
//! Azure OpenAI under `/openai/` (a deployment's `baseUrl` is `http://<addr>`), Mistral under
//! `/mistral/v1/` and DeepSeek under `/deepseek/` (`baseUrl` `http://<addr>/mistral/v1` and
//! `http://<addr>/deepseek`), since those two share OpenAI's paths.
//!
//! In-process: `FakeProvider::start().await`, then `push(Script::...)`, `requests()`.
//! As a process (`fake-provider` binary): the same behaviour, with the control endpoints
//! `POST /__fake/script` (a Script or a list), `GET /__fake/requests`, `POST /__fake/reset`.

mod native;
mod reply;
mod script;
mod server;

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The AWS key pair whose SigV4 signatures the fake's Bedrock dialect accepts.
pub use native::{BEDROCK_ACCESS_KEY_ID, BEDROCK_SECRET_ACCESS_KEY};
pub use reply::CHAT_PREFIX;
pub use script::Script;

/// One request as the fake received it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The wire format the fake answered in (`openai`, `anthropic`, ...).
    #[serde(default)]
    pub dialect: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON, or as a string when it is not JSON.
    pub body: Value,
}

struct State {
    scripts: Mutex<VecDeque<Script>>,
    requests: Mutex<Vec<Recorded>>,
    latency: Duration,
    /// Held requests wait for a permit.
    held: tokio::sync::Semaphore,
}

/// A running fake provider; stops when dropped.
pub struct FakeProvider {
    addr: SocketAddr,
    state: Arc<State>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeProvider {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), Duration::ZERO).await
    }

    /// Starts on `addr`, answering every request after `latency`.
    pub async fn start_with(addr: SocketAddr, latency: Duration) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            scripts: Mutex::default(),
            requests: Mutex::default(),
            latency,
            held: tokio::sync::Semaphore::new(0),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(server::serve(listener, state.clone(), stopped));
        Ok(Self {
            addr,
            state,
            _stop: stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, ending in `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a script for the next request that has none.
    pub fn push(&self, script: Script) {
        lock(&self.state.scripts).push_back(script);
    }

    /// Every API request received so far (control requests excluded).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// How many API requests arrived so far.
    pub fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// Lets `n` held requests (`Script::Hold`) answer.
    pub fn release(&self, n: usize) {
        self.state.held.add_permits(n);
    }

    /// Forgets scripts and recorded requests.
    pub fn reset(&self) {
        lock(&self.state.scripts).clear();
        lock(&self.state.requests).clear();
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
