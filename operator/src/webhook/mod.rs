//! The mutating admission webhook that injects the data plane sidecar: an HTTPS listener of its
//! own (TLS with a certificate the operator issues and rotates, [`rotation`]), one route,
//! `POST /mutate-pods`, answered from the informer caches ([`review`]). Every replica serves it;
//! the leader alone writes certificates.

pub mod certs;
pub mod gaps;
pub mod review;
pub mod rotation;
pub mod tls;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use review::Injector;
use tls::ServingCert;

/// The API server sends at most a pod of a few MiB (its own request limit is 3 MiB).
const MAX_REVIEW_BYTES: usize = 4 << 20;
pub const PATH: &str = "/mutate-pods";

/// Binds `listen` and serves reviews until `shutdown`; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    cert: Arc<ServingCert>,
    injector: Arc<Injector>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let config = tls::server_config(cert).map_err(std::io::Error::other)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "webhook accept failed");
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let injector = injector.clone();
            tokio::spawn(async move {
                let stream = match acceptor.accept(stream).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%error, "webhook TLS handshake failed");
                        return;
                    }
                };
                let service = service_fn(move |request| {
                    let injector = injector.clone();
                    async move { Ok::<_, Infallible>(handle(&injector, request).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                if let Err(error) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "webhook connection ended");
                }
            });
        }
    });
    Ok(addr)
}

async fn handle(injector: &Injector, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != PATH {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
    }
    let body = match Limited::new(request.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, &format!("{error}\n"));
        }
    };
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("not an AdmissionReview of a Pod: {error}\n"),
            );
        }
    };
    let response = match review.try_into() {
        Ok(request) => injector.review(&request),
        Err(error) => AdmissionResponse::invalid(error.to_string()),
    };
    let body = serde_json::to_vec(&response.into_review()).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}
