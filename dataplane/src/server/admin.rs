//! The admin listener: `/healthz`, `/readyz` (200 once a config is loaded, with its checksum)
//! and `/metrics`. Nothing else answers, and none of it is on the public listener.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::{
    config::ConfigHandle,
    server::{ResponseBody, full},
    telemetry::Metrics,
};

pub fn handle(
    config: &ConfigHandle,
    metrics: &Metrics,
    request: &Request<Incoming>,
) -> Response<ResponseBody> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match config.checksum() {
            Some(checksum) => (
                StatusCode::OK,
                "application/json",
                format!("{{\"ready\":true,\"checksum\":\"{checksum}\"}}\n"),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                "{\"ready\":false}\n".to_owned(),
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
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
