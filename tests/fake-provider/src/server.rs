//! The fake's HTTP side: control endpoints, recording, and scripted answers.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Frame, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{Recorded, State, lock, native, script::Script};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Returned by the service to make hyper drop the connection without answering.
#[derive(Debug)]
struct Abort;

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted connection reset")
    }
}

impl std::error::Error for Abort {}

pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
            _ = &mut stop => return,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Body>, Abort> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    if let Some(control) = path.strip_prefix("/__fake/") {
        return Ok(control_answer(&state, &parts.method, control, &bytes));
    }
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let dialect = native::for_path(&path);
    lock(&state.requests).push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        dialect: dialect.name.to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    });
    let req = native::Req {
        path: &path,
        query: parts.uri.query().unwrap_or_default(),
        headers: &parts.headers,
        body: &body,
        raw: &bytes,
    };
    if let Some(reply) = native::unscripted(&req) {
        return Ok(respond(reply, Ending::Done));
    }
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let script = lock(&state.scripts).pop_front().unwrap_or(Script::Ok);
    let normal = |ending| respond((dialect.reply)(&req), ending);
    match script {
        Script::Ok => Ok(normal(Ending::Done)),
        Script::Delay { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(normal(Ending::Done))
        }
        Script::Status {
            status,
            body: custom,
            retry_after,
        } => {
            let mut response = match custom {
                Some(payload) => json_response(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &payload,
                    &[],
                ),
                None => respond((dialect.error)(status), Ending::Done),
            };
            if let Some(v) = retry_after.and_then(|v| v.parse().ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
                // The scripted seconds rule: a dialect's own finer header would win otherwise.
                response.headers_mut().remove("retry-after-ms");
            }
            Ok(response)
        }
        Script::Reset => Err(Abort),
        Script::Hold => {
            if let Ok(permit) = state.held.acquire().await {
                permit.forget();
            }
            Ok(normal(Ending::Done))
        }
        Script::CutStreamAfter { chunks } => Ok(normal(Ending::Cut(chunks))),
        Script::StreamErrorAfter { chunks } => Ok(normal(Ending::Error(chunks))),
        Script::StallAfter { chunks } => Ok(normal(Ending::Stall(chunks))),
        Script::Paced { gap_ms } => Ok(normal(Ending::Paced(Duration::from_millis(gap_ms)))),
        Script::MalformedJson => Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(Bytes::from_static(
                b"{\"id\": \"chatcmpl-broken\", \"choices\": [",
            )))
            .unwrap_or_default()),
    }
}

/// How a streamed answer ends.
#[derive(Clone, Copy)]
enum Ending {
    /// With the provider's last event.
    Done,
    /// The connection breaks after this many events.
    Cut(usize),
    /// After this many events, the provider's error event, then the stream closes.
    Error(usize),
    /// After this many events, silence: the connection stays open.
    Stall(usize),
    /// Every event, with this gap before each but the first.
    Paced(Duration),
}

fn respond(reply: native::Reply, ending: Ending) -> Response<Body> {
    match reply {
        native::Reply::Json {
            status,
            body,
            headers,
        } => json_response(status, &body, &headers),
        native::Reply::Stream {
            content_type,
            frames,
            error,
        } => stream(content_type, frames, error, ending),
    }
}

/// A stream of `frames`, ended as `ending` says.
fn stream(
    content_type: &'static str,
    mut frames: Vec<Bytes>,
    error: Bytes,
    ending: Ending,
) -> Response<Body> {
    let stall = matches!(ending, Ending::Stall(_));
    let gap = match ending {
        Ending::Paced(gap) => gap,
        _ => Duration::ZERO,
    };
    let cut = match ending {
        Ending::Done | Ending::Paced(_) => false,
        Ending::Cut(n) => {
            frames.truncate(n);
            true
        }
        Ending::Stall(n) => {
            frames.truncate(n);
            false
        }
        Ending::Error(n) => {
            frames.truncate(n);
            frames.push(error);
            false
        }
    };
    let frames = stream::unfold(
        (frames.into_iter(), cut, true),
        move |(mut rest, cut, first)| async move {
            if !first && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            match rest.next() {
                Some(bytes) => Some((Ok(Frame::data(bytes)), (rest, cut, false))),
                None if stall => std::future::pending().await,
                None if cut => {
                    // Let the server flush what was sent, as a provider dying mid-stream would have.
                    tokio::task::yield_now().await;
                    let reset =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "scripted cut");
                    Some((Err(reset), (rest, false, false)))
                }
                None => None,
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap_or_default()
}

fn control_answer(state: &State, method: &Method, path: &str, body: &[u8]) -> Response<Body> {
    match (method, path) {
        (&Method::POST, "script") => {
            let scripts = serde_json::from_slice::<Vec<Script>>(body)
                .or_else(|_| serde_json::from_slice::<Script>(body).map(|s| vec![s]));
            match scripts {
                Ok(scripts) => {
                    lock(&state.scripts).extend(scripts);
                    json_response(StatusCode::OK, &json!({"ok": true}), &[])
                }
                Err(e) => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": e.to_string()}),
                    &[],
                ),
            }
        }
        (&Method::GET, "requests") => {
            json_response(StatusCode::OK, &json!(*lock(&state.requests)), &[])
        }
        (&Method::POST, "reset") => {
            lock(&state.scripts).clear();
            lock(&state.requests).clear();
            json_response(StatusCode::OK, &json!({"ok": true}), &[])
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown control endpoint"}),
            &[],
        ),
    }
}

fn json_response(
    status: StatusCode,
    value: &Value,
    headers: &[(&'static str, String)],
) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    for (name, value) in headers {
        if let Ok(value) = header::HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}
