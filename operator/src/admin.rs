//! The admin listener: `/healthz` (the process is serving), `/readyz` (every watch has listed
//! once, so a reconcile sees the whole namespace) and `/metrics`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use modelgate_crds::exposition;
use tokio::{net::TcpListener, sync::watch};

use crate::{metrics::Metrics, webhook::tls::ServingCert};

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    /// With the webhook on: the certificate it presents, which must be loaded to be ready.
    pub webhook_cert: std::sync::OnceLock<Arc<ServingCert>>,
}

impl Admin {
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.webhook_cert.get().is_none_or(|cert| cert.is_loaded())
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match request.uri().path() {
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" if self.is_ready() => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "caches not synced, or no webhook certificate yet\n".to_owned(),
            ),
            "/metrics" => {
                let accept = request
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let (content_type, body) = exposition::negotiate(accept, self.metrics.encode());
                (StatusCode::OK, content_type, body)
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_owned(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// Binds the admin listener; the returned address is the bound one (port 0 resolves).
pub async fn serve(
    admin: Arc<Admin>,
    listen: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "admin accept failed");
                        continue;
                    }
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = admin.respond(&request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}
