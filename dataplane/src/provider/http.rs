//! The HTTP clients every adapter shares: pooled keep-alive connections, HTTP/1.1 and HTTP/2
//! (ALPN), rustls with the webpki roots. A connector's connect timeout is fixed when it is
//! built, so there is one pooled client per distinct connect timeout (configs use a handful)
//! and address rule.
//!
//! Every name is checked again after DNS, at connect time: a `baseUrl` whose host resolves to a
//! link-local or cloud-metadata address is never connected to, nor to loopback unless its
//! deployment may (a name that changed what it resolves to after the config was checked is
//! refused the same way). The refusal is a connect error, logged in the decision record.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Mutex,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{
            HttpConnector,
            dns::{GaiResolver, Name},
        },
    },
    rt::{TokioExecutor, TokioTimer},
};
use modelgate_crds::compile::{forbidden_address, is_loopback};
use tower_service::Service;

pub type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// Connect timeout when neither the deployment nor the policy sets one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients by (connect timeout, loopback allowed); the default one is kept outside the lock.
pub struct HttpClients {
    default: HttpClient,
    others: Mutex<HashMap<(Duration, bool), HttpClient>>,
}

impl Default for HttpClients {
    fn default() -> Self {
        Self {
            default: build(DEFAULT_CONNECT_TIMEOUT, false),
            others: Mutex::default(),
        }
    }
}

impl HttpClients {
    /// The client whose connections time out after `connect` and reach loopback addresses only
    /// when `allow_loopback` (a cheap clone of a pooled client).
    pub fn client(&self, connect: Duration, allow_loopback: bool) -> HttpClient {
        if (connect, allow_loopback) == (DEFAULT_CONNECT_TIMEOUT, false) {
            return self.default.clone();
        }
        let mut clients = crate::sync::lock(&self.others);
        clients
            .entry((connect, allow_loopback))
            .or_insert_with(|| build(connect, allow_loopback))
            .clone()
    }
}

fn build(connect: Duration, allow_loopback: bool) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver {
        inner: GaiResolver::new(),
        allow_loopback,
    });
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

/// The system resolver, with every answer checked against the address rule.
#[derive(Clone)]
pub struct GuardedResolver {
    inner: GaiResolver,
    allow_loopback: bool,
}

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        let resolving = self.inner.call(name);
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = resolving.await?.collect();
            check(&host, &addresses, allow_loopback)?;
            Ok(addresses.into_iter())
        })
    }
}

/// Refuses a name if any address it resolves to may not be called: one hostile answer among
/// good ones is enough to distrust the name.
fn check(host: &str, addresses: &[SocketAddr], allow_loopback: bool) -> io::Result<()> {
    for address in addresses {
        let why = match forbidden_address(address.ip()) {
            Some(what) => what,
            None if !allow_loopback && is_loopback(address.ip()) => "loopback",
            None => continue,
        };
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{host} resolves to a {why} address, which is never called"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(ips: &[&str]) -> Vec<SocketAddr> {
        ips.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 443))
            .collect()
    }

    #[test]
    fn names_resolving_to_metadata_link_local_or_unwanted_loopback_are_refused() {
        for ips in [
            &["169.254.169.254"][..],
            &["10.0.0.1", "169.254.3.4"],
            &["fd00:ec2::254"],
            &["fe80::1"],
            &["::ffff:169.254.169.254"],
        ] {
            let refused = check("api.example.com", &addresses(ips), true).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied, "{ips:?}");
        }
        assert!(check("h", &addresses(&["127.0.0.1"]), false).is_err());
        assert!(check("h", &addresses(&["::1"]), false).is_err());
        assert!(check("h", &addresses(&["127.0.0.1"]), true).is_ok());
        assert!(check("h", &addresses(&["10.1.2.3", "192.168.0.9"]), false).is_ok());
    }
}
