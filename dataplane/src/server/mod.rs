//! Listeners and connections: HTTP/1.1 and h2c on the API listener, plain HTTP/1.1 on the admin
//! listener, header-read timeouts, and a graceful drain on shutdown. Knows nothing of what it
//! serves: the composition root hands it the handlers.

pub mod admin;
mod body;
mod coalesce;
mod lifecycle;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

pub use body::{ResponseBody, full};
pub use coalesce::streamed;
pub use lifecycle::Lifecycle;

/// What one listener allows its clients, so slow or greedy ones cannot hold it.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A request's head must arrive within this.
    pub header_read: Duration,
    /// Open connections at once; past it, each request of a new connection is answered 503 with
    /// `Retry-After` and the connection closed.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// The read buffer of an HTTP/1 connection (the request head must fit).
const MAX_HTTP1_BUFFER: usize = 256 * 1024;
/// Concurrent streams of one HTTP/2 connection.
const MAX_HTTP2_STREAMS: u32 = 256;
const MAX_HTTP2_HEADER_LIST: u32 = 64 * 1024;
/// An HTTP/2 connection that answers no ping within this is closed.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// A listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr`; returns the listener and the address it got (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    Ok((listener, bound))
}

/// Accepts connections until `closed` flips, then waits up to `drain` for them to finish.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    mut closed: watch::Receiver<bool>,
    drain: Duration,
    limits: ConnectionLimits,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(MAX_HTTP1_BUFFER)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_HTTP2_STREAMS)
        .max_header_list_size(MAX_HTTP2_HEADER_LIST)
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
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
                let permit = connections.clone().try_acquire_owned().ok();
                let handler = handler.clone();
                let at_capacity = permit.is_none();
                let service = service_fn(move |req| {
                    let response = (!at_capacity).then(|| handler(req));
                    async move {
                        Ok::<_, Infallible>(match response {
                            Some(response) => response.await,
                            None => over_capacity(),
                        })
                    }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    // Held for the connection's life.
                    let _permit = permit;
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            () = async { let _ = closed.wait_for(|closed| *closed).await; } => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing connections with requests still in flight");
    }
}

/// The answer on a connection past the cap: try again in a moment, elsewhere or here.
fn over_capacity() -> Response<ResponseBody> {
    let mut response = Response::new(full("too many open connections\n"));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}
