//! The admin listener: `/healthz`, `/readyz` (200 once a config is loaded, with its checksum)
//! and `/metrics` (OpenMetrics when asked for, else the Prometheus text format). Nothing else
//! answers, and none of it is on the public listener.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use modelgate_crds::exposition;

use crate::{
    config::{ConfigHandle, source::SourceStatus},
    server::{ResponseBody, full},
    telemetry::Metrics,
};

pub fn handle(
    config: &ConfigHandle,
    source: &SourceStatus,
    metrics: &Metrics,
    draining: bool,
    request: &Request<Incoming>,
) -> Response<ResponseBody> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => readyz(config, source, draining),
        "/metrics" => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (content_type, body) = exposition::negotiate(accept, metrics.encode());
            (StatusCode::OK, content_type, body)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// 200 once a config is served (with its checksum), 503 before and from the start of a
/// shutdown. In a cluster it also says whether the API server answers: without it the last good
/// config keeps serving (still ready).
fn readyz(
    config: &ConfigHandle,
    source: &SourceStatus,
    draining: bool,
) -> (StatusCode, &'static str, String) {
    let checksum = config.checksum();
    let mut body = serde_json::json!({"ready": checksum.is_some() && !draining});
    if draining {
        body["draining"] = true.into();
    }
    if let Some(checksum) = checksum {
        body["checksum"] = checksum.into();
    }
    if let SourceStatus::Kubernetes(connection) = source {
        body["source"] = "kubernetes".into();
        body["connected"] = connection.is_connected().into();
    }
    let status = if body["ready"] == true {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, "application/json", format!("{body}\n"))
}
