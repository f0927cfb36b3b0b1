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

use crate::{Recorded, State, lock, reply, script::Script};

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
    lock(&state.requests).push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
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
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let script = lock(&state.scripts).pop_front().unwrap_or(Script::Ok);
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    match script {
        Script::Ok => Ok(answer(&path, &body, stream, Ending::Done)),
        Script::Delay { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(answer(&path, &body, stream, Ending::Done))
        }
        Script::Status {
            status,
            body: custom,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let payload = custom.unwrap_or_else(|| reply::error_body(status.as_u16()));
            let mut response = json_response(status, &payload);
            if let Some(v) = retry_after.and_then(|v| v.parse().ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(response)
        }
        Script::Reset => Err(Abort),
        Script::Hold => {
            if let Ok(permit) = state.held.acquire().await {
                permit.forget();
            }
            Ok(answer(&path, &body, stream, Ending::Done))
        }
        Script::CutStreamAfter { chunks } => Ok(answer(&path, &body, stream, Ending::Cut(chunks))),
        Script::StreamErrorAfter { chunks } => {
            Ok(answer(&path, &body, stream, Ending::Error(chunks)))
        }
        Script::StallAfter { chunks } => Ok(answer(&path, &body, stream, Ending::Stall(chunks))),
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
    /// `data: [DONE]`.
    Done,
    /// The connection breaks after this many events.
    Cut(usize),
    /// After this many events, an OpenAI error event, then the stream closes without `[DONE]`.
    Error(usize),
    /// After this many events, silence: the connection stays open.
    Stall(usize),
}

fn answer(path: &str, body: &Value, stream: bool, ending: Ending) -> Response<Body> {
    match path {
        "/v1/chat/completions" if stream => sse(reply::chat_chunks(body), ending),
        "/v1/chat/completions" => json_response(StatusCode::OK, &reply::chat_completion(body)),
        "/v1/embeddings" => json_response(StatusCode::OK, &reply::embeddings(body)),
        "/v1/images/generations" => json_response(StatusCode::OK, &reply::images(body)),
        "/v1/models" => json_response(StatusCode::OK, &reply::models()),
        _ => json_response(StatusCode::NOT_FOUND, &reply::error_body(404)),
    }
}

/// An SSE stream of `events`, ended as `ending` says.
fn sse(events: Vec<Value>, ending: Ending) -> Response<Body> {
    let mut frames: Vec<Bytes> = events
        .iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    let stall = matches!(ending, Ending::Stall(_));
    let cut = match ending {
        Ending::Done => {
            frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
            false
        }
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
            frames.push(Bytes::from(format!("data: {}\n\n", reply::error_body(500))));
            false
        }
    };
    let frames = stream::unfold(
        (frames.into_iter(), cut),
        move |(mut rest, cut)| async move {
            match rest.next() {
                Some(bytes) => Some((Ok(Frame::data(bytes)), (rest, cut))),
                None if stall => std::future::pending().await,
                None if cut => {
                    // Let the server flush what was sent, as a provider dying mid-stream would have.
                    tokio::task::yield_now().await;
                    let reset =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "scripted cut");
                    Some((Err(reset), (rest, false)))
                }
                None => None,
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
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
                    json_response(StatusCode::OK, &json!({"ok": true}))
                }
                Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
            }
        }
        (&Method::GET, "requests") => json_response(StatusCode::OK, &json!(*lock(&state.requests))),
        (&Method::POST, "reset") => {
            lock(&state.scripts).clear();
            lock(&state.requests).clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown control endpoint"}),
        ),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}
