//! The one HTTP client every adapter shares: pooled keep-alive connections, HTTP/1.1 and HTTP/2
//! (ALPN), rustls with the webpki roots.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn build_http_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
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
