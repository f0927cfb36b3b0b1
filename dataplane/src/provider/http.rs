//! The HTTP clients every adapter shares: pooled keep-alive connections, HTTP/1.1 and HTTP/2
//! (ALPN), rustls with the webpki roots. A connector's connect timeout is fixed when it is
//! built, so there is one pooled client per distinct connect timeout (configs use a handful).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Connect timeout when neither the deployment nor the policy sets one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients by connect timeout; the default one is kept outside the lock.
pub struct HttpClients {
    default: HttpClient,
    by_connect_timeout: Mutex<HashMap<Duration, HttpClient>>,
}

impl Default for HttpClients {
    fn default() -> Self {
        Self {
            default: build(DEFAULT_CONNECT_TIMEOUT),
            by_connect_timeout: Mutex::default(),
        }
    }
}

impl HttpClients {
    /// The client whose connections time out after `connect` (a cheap clone of a pooled client).
    pub fn with_connect_timeout(&self, connect: Duration) -> HttpClient {
        if connect == DEFAULT_CONNECT_TIMEOUT {
            return self.default.clone();
        }
        let mut clients = crate::sync::lock(&self.by_connect_timeout);
        clients
            .entry(connect)
            .or_insert_with(|| build(connect))
            .clone()
    }
}

fn build(connect: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(512)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}
