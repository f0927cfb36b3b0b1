//! Serving a cache hit: the stored answer as it was, or replayed as SSE for a streaming request.
//! No provider is called and the call costs nothing; by default it still counts against the
//! caller's RPM (a RoutingPolicy may turn that off).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::{
    AppState, full,
    inference::{Answer, CACHE_HEADER, Rejected},
    response::REQUEST_ID,
};
use crate::{
    cache::replay, config::KeyEntry, error::ApiError, limits::Demand, telemetry::DecisionRecord,
};

pub(super) struct Hit<'a> {
    /// The ModelGroup the request resolved to.
    pub group: &'a str,
    pub body: Bytes,
    pub stream: bool,
    pub client_wants_usage: bool,
    pub hits_count_against_rpm: bool,
}

pub(super) async fn serve(
    state: &AppState,
    key: &KeyEntry,
    hit: Hit<'_>,
    record: &mut DecisionRecord,
) -> Result<Answer, Rejected> {
    record.cache = Some("hit");
    state.metrics.cache("hit");
    if hit.hits_count_against_rpm {
        let demand = Demand {
            rates_only: true,
            ..Demand::default()
        };
        let ticket = state
            .limiter
            .admit(&key.limits, &record.request_id, demand)
            .await
            .map_err(Rejected::from)?;
        ticket.settle(0, 0).await;
    }
    let (body, content_type) = if hit.stream {
        let stream =
            replay::as_stream(&hit.body, hit.client_wants_usage).ok_or_else(ApiError::internal)?;
        (stream, "text/event-stream")
    } else {
        (hit.body, "application/json")
    };
    record.cost_usd = Some(0.0);
    record.status = StatusCode::OK.as_u16();
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&record.request_id) {
        headers.insert(REQUEST_ID, id);
    }
    if let Ok(group) = HeaderValue::from_str(hit.group) {
        headers.insert("x-modelgate-routed-model", group);
    }
    headers.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
    headers.insert("x-modelgate-cost", HeaderValue::from_static("0.000000000"));
    headers.insert("x-modelgate-attempts", HeaderValue::from_static("0"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(Answer::Complete(response))
}
