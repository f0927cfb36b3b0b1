//! Chat completions, embeddings and image generation share one path: authenticate, read and
//! parse the body, resolve the model, plan, execute, answer, and log the decision.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use modelgate_crds::common::Strategy;
use serde::Deserialize;
use tokio::time::Instant;

use super::{
    AppState, EXTENSION_FIELD, JsonRequest, ResponseBody, cached, error_response, full,
    response::REQUEST_ID,
    spend::{self, Charge, StreamBilling},
    stream::{StreamEnd, observe},
};
use crate::{
    auth,
    cache::{self, Decision},
    config::{Deployment, KeyEntry},
    error::ApiError,
    limits::{Refusal, Ticket, cost::usd},
    provider::{AttemptTimeouts, Call, DEFAULT_CONNECT_TIMEOUT, Endpoint, UpstreamBody},
    resilience::{self, BreakerSettings, Execution, Failed, RetryPolicy},
    route::{self, RouteInput, tags::RequestTags},
    telemetry::{AttemptRecord, DecisionRecord},
};

const DEFAULT_FIRST_BYTE: Duration = Duration::from_secs(300);
const DEFAULT_IDLE: Duration = Duration::from_secs(120);
const MAX_METADATA_ENTRIES: usize = 16;
const MAX_METADATA_BYTES: usize = 256;

const TAGS_HEADER: &str = "x-modelgate-tags";
/// On a request, `false` opts out of the cache; on an answer, what the cache did.
pub(super) const CACHE_HEADER: &str = "x-modelgate-cache";
const STRATEGY_HEADER: &str = "x-modelgate-strategy";
const RETRIES_HEADER: &str = "x-modelgate-retries";
/// The provider code of a request too long for the model's context window.
const CONTEXT_LENGTH_EXCEEDED: &str = "context_length_exceeded";
const UNSUPPORTED_PARAMETER: &str = crate::provider::UNSUPPORTED;
/// Deadline across every attempt of one request when the policy sets none.
const DEFAULT_TOTAL: Duration = Duration::from_secs(600);

/// modelgate's body extension (`"modelgate": {...}`), stripped before forwarding.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extension {
    /// Capability tags the request needs (replacing the key's defaults).
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// `false` keeps the call to the requested group's own deployments.
    #[serde(default)]
    fallbacks: Option<bool>,
    /// Free-form labels copied into the decision log.
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    /// `false` keeps this request out of the response cache (no lookup, no store).
    #[serde(default)]
    cache: Option<bool>,
}

/// An error answer plus the headers that explain it.
pub(super) struct Rejected {
    pub(super) error: ApiError,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
}

impl From<Refusal> for Rejected {
    fn from(refusal: Refusal) -> Self {
        let (error, headers) = spend::refused(&refusal);
        Self { error, headers }
    }
}

impl From<ApiError> for Rejected {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            headers: Vec::new(),
        }
    }
}

pub(super) enum Answer {
    /// Complete: the decision is logged now.
    Complete(Response<ResponseBody>),
    /// Streaming: the stream logs the decision when it ends.
    Streaming(Response<ResponseBody>),
}

pub async fn handle(
    state: &AppState,
    endpoint: Endpoint,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let mut record = DecisionRecord {
        request_id: format!("req_{:032x}", fastrand::u128(..)),
        timestamp: jiff::Timestamp::now().to_string(),
        endpoint: endpoint.as_str(),
        strategy: "none",
        ..DecisionRecord::default()
    };
    let answer = run(state, endpoint, request, &mut record, started).await;
    let response = match answer {
        Ok(Answer::Streaming(response)) => return response,
        Ok(Answer::Complete(response)) => {
            record.status = response.status().as_u16();
            state
                .metrics
                .request(endpoint.as_str(), "ok", started.elapsed().as_secs_f64());
            response
        }
        Err(rejected) => {
            record.status = rejected.error.status.as_u16();
            record.error_code = Some(rejected.error.code);
            state.metrics.request(
                endpoint.as_str(),
                rejected.error.code,
                started.elapsed().as_secs_f64(),
            );
            let mut response = error_response(&rejected.error, Some(&record.request_id));
            response.headers_mut().extend(rejected.headers);
            if let Some(cache) = record.cache {
                response
                    .headers_mut()
                    .insert(CACHE_HEADER, HeaderValue::from_static(cache));
            }
            response
        }
    };
    record.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    state.decisions.record(record);
    response
}

async fn run(
    state: &AppState,
    endpoint: Endpoint,
    request: Request<Incoming>,
    record: &mut DecisionRecord,
    started: Instant,
) -> Result<Answer, Rejected> {
    let snapshot = state.config.current().ok_or_else(ApiError::not_ready)?;
    record.config_checksum = snapshot.checksum().to_owned();
    let key = auth::authenticate(
        &snapshot,
        request.headers(),
        jiff::Timestamp::now().as_second(),
    )?;
    record.key_id = Some(format!("{}/{}", key.spec.namespace, key.spec.name));
    record.org = Some(key.spec.org.clone());
    record.team = key.spec.team.clone();
    let tag_header = header_text(request.headers(), TAGS_HEADER)?;
    let cache_opt_out = header_text(request.headers(), CACHE_HEADER)?
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    let retries_override = header_text(request.headers(), RETRIES_HEADER)?
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                ApiError::invalid_request(format!("`{RETRIES_HEADER}` must be a whole number"))
                    .with_param(RETRIES_HEADER)
            })
        })
        .transpose()?;
    let strategy_override = header_text(request.headers(), STRATEGY_HEADER)?
        .map(|s| parse_strategy(&s))
        .transpose()?;

    let body = read_body(request, state.max_body_bytes).await?;
    let parsed = JsonRequest::parse(body)?;
    let model: String = parsed
        .field("model")?
        .ok_or_else(|| ApiError::invalid_request("`model` is required.").with_param("model"))?;
    record.model = Some(model.clone());
    let extension: Extension = parsed
        .field(EXTENSION_FIELD)
        .map_err(|e| {
            ApiError::invalid_request(format!("modelgate extension: {}", e.message))
                .with_param(EXTENSION_FIELD)
        })?
        .unwrap_or_default();
    record.metadata = checked_metadata(extension.metadata)?;
    let stream =
        endpoint == Endpoint::ChatCompletions && parsed.field::<bool>("stream")?.unwrap_or(false);
    record.stream = stream;
    let client_wants_usage = stream
        && parsed
            .field::<serde_json::Value>("stream_options")?
            .is_some_and(|o| o.get("include_usage") == Some(&serde_json::Value::Bool(true)));

    let input_seed = fastrand::u64(..);
    let tags = RequestTags::from_request(&parsed, extension.tags, tag_header.as_deref())?;
    let policy_tags = key
        .policy
        .as_ref()
        .map_or(&[][..], |p| &p.spec.default_tags[..]);
    let required = tags.required(&key.spec.default_tags, policy_tags);
    let input = RouteInput {
        model: &model,
        tags: &required,
        explicit_tags: tags.explicit.is_some(),
        strategy_override,
        fallbacks: extension.fallbacks.unwrap_or(true),
        stream,
        prompt_tokens: estimate_prompt_tokens(endpoint, &parsed),
        max_tokens: parsed
            .field::<u64>("max_completion_tokens")?
            .or(parsed.field::<u64>("max_tokens")?),
        seed: input_seed,
    };
    let routed = route::route(&snapshot, key, &input)?;
    let routed_group = routed.group;
    let plan = routed.plan;
    record.group = Some(snapshot.group(routed.group).spec.name.clone());
    record.strategy = routed
        .record
        .groups
        .first()
        .map_or("none", |g| g.strategy.as_str());
    record.routing = Some(routed.record);
    record.plan = plan
        .attempts
        .iter()
        .map(|a| snapshot.group(a.group).deployments[a.deployment].id.clone())
        .collect();

    // The response cache: an exact repeat is answered here, without a provider, at no cost.
    let cache = state.cache.decide(
        key,
        snapshot.group(routed_group),
        endpoint,
        &parsed,
        cache_opt_out || extension.cache == Some(false),
    );
    if let Decision::Use {
        key: cache_key,
        hits_count_against_rpm,
        ..
    } = &cache
        && let Some(body) = state.cache.get(cache_key).await
    {
        return cached::serve(
            state,
            key,
            cached::Hit {
                group: &snapshot.group(routed_group).spec.name,
                body,
                stream,
                client_wants_usage,
                hits_count_against_rpm: *hits_count_against_rpm,
            },
            record,
        )
        .await;
    }
    let cache_result = if cache == Decision::Bypass {
        "bypass"
    } else {
        "miss"
    };
    record.cache = Some(cache_result);
    state.metrics.cache(cache_result);

    // Spend control, before any provider is called: the worst case is reserved against every
    // budget that applies and the call counted against every rate limit, or it is refused here.
    // A key without limits skips all of it.
    let ticket = if key.limits.is_empty() {
        Ticket::unlimited()
    } else {
        let demand = spend::demand(
            &snapshot,
            &plan,
            endpoint,
            input.prompt_tokens,
            input.max_tokens,
        );
        record.reserved_usd = Some(usd(demand.worst_case_nanos));
        state
            .limiter
            .admit(&key.limits, &record.request_id, demand)
            .await
            .map_err(Rejected::from)?
    };
    let charge = Charge {
        ticket,
        org: key.spec.org.clone(),
        team: key.spec.team.clone(),
    };

    let policy = key.policy.as_deref();
    let mut retry = policy.map_or_else(RetryPolicy::default, |p| {
        RetryPolicy::from_compiled(&p.spec.retries)
    });
    if let Some(asked) = retries_override {
        // Callers may ask for fewer retries than their policy allows, never more.
        retry.retries_per_link = retry.retries_per_link.min(asked);
    }
    let total = policy
        .and_then(|p| p.spec.timeouts.total_ms)
        .map_or(DEFAULT_TOTAL, Duration::from_millis);
    let execution = Execution {
        org: &key.spec.org,
        retry,
        breaker: policy.map_or_else(BreakerSettings::default, |p| {
            BreakerSettings::from_compiled(&p.spec.circuit_breaker)
        }),
        deadline: started + total,
        breakers: &state.breakers,
        budget: &state.retry_budget,
        metrics: &state.metrics,
        seed: input_seed,
    };
    let make_call = |deployment| call_for(endpoint, &parsed, stream, deployment, state, key);
    let mut outcome = resilience::execute(&snapshot, &plan, &execution, make_call).await;
    // Too long for this group: its context-window fallbacks get the request, if it has any.
    if let Err(Failed::Client { error, .. }) = &outcome
        && error.provider_code.as_deref() == Some(CONTEXT_LENGTH_EXCEEDED)
        && let Some(wider) = route::route_context_fallbacks(&snapshot, key, &input, routed_group)
        && let Err(Failed::Client { attempts, .. }) = outcome
    {
        record.plan.extend(
            wider
                .plan
                .attempts
                .iter()
                .map(|a| snapshot.group(a.group).deployments[a.deployment].id.clone()),
        );
        record.context_window_routing = Some(wider.record);
        let make_call = |deployment| call_for(endpoint, &parsed, stream, deployment, state, key);
        let retried = resilience::execute(&snapshot, &wider.plan, &execution, make_call).await;
        outcome = resilience::after(attempts, retried);
    }
    let served = match outcome {
        Ok(served) => served,
        Err(Failed::Client { error, attempts }) => {
            let status = error.status.unwrap_or(StatusCode::BAD_REQUEST);
            let code = client_error_code(error.provider_code.as_deref());
            let count = calls_made(&attempts);
            record.attempts = attempts;
            return Err(Rejected {
                error: ApiError::upstream_client_error(status, code, error.message, error.param),
                headers: vec![attempts_header(count)],
            });
        }
        Err(Failed::Exhausted { attempts }) => {
            let chain = resilience::chain_header(&attempts);
            let count = calls_made(&attempts);
            record.attempts = attempts;
            let mut headers = vec![attempts_header(count)];
            if let Ok(value) = HeaderValue::from_str(&chain) {
                headers.push((HeaderName::from_static("x-modelgate-fallback-chain"), value));
            }
            return Err(Rejected {
                error: ApiError::all_deployments_failed(count),
                headers,
            });
        }
    };

    let served_group = snapshot.group(served.by.group);
    let price = served_group.deployments[served.by.deployment].hot.price;
    let deployment = &served_group.deployments[served.by.deployment].spec;
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(REQUEST_ID, &record.request_id);
    set("x-modelgate-routed-model", &served_group.spec.name);
    set("x-modelgate-provider", deployment.provider.as_str());
    set("x-modelgate-deployment", &deployment.name);
    set(
        "x-modelgate-attempts",
        &calls_made(&served.attempts).to_string(),
    );
    record.attempts = served.attempts;

    match served.body {
        UpstreamBody::Complete { body, usage } => {
            record.usage = usage;
            if let Some(settle) = charge.cost(
                price,
                usage,
                &served_group.spec.name,
                record,
                &state.metrics,
            ) {
                if let Ok(value) = HeaderValue::from_str(&format!("{:.9}", usd(settle.cost))) {
                    headers.insert("x-modelgate-cost", value);
                }
                settle.now().await;
            }
            let signals = served.in_flight.signals();
            let latency_ms = served.started.elapsed().as_secs_f64() * 1000.0;
            let output_tokens = usage.map_or(0, |u| u.completion_tokens).max(1);
            signals.record_per_token(latency_ms / output_tokens as f64);
            if let Some(usage) = usage {
                signals.add_tokens(usage.total_tokens);
            }
            if let Decision::Use {
                key: cache_key,
                ttl,
                ..
            } = cache
                && !(cache::storable(endpoint, &body)
                    && state.cache.put(cache_key, body.clone(), ttl))
            {
                record.cache = Some("store-skipped");
                state.metrics.cache("store-skipped");
            }
            if let Some(result) = record.cache {
                headers.insert(CACHE_HEADER, HeaderValue::from_static(result));
            }
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            *response.body_mut() = full(body);
            Ok(Answer::Complete(response))
        }
        UpstreamBody::Stream(upstream) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if let Some(result) = record.cache {
                headers.insert(CACHE_HEADER, HeaderValue::from_static(result));
            }
            record.status = StatusCode::OK.as_u16();
            let end = StreamEnd::new(
                std::mem::take(record),
                started,
                state.decisions.clone(),
                state.metrics.clone(),
                served.in_flight,
                served.started,
                StreamBilling {
                    charge,
                    price,
                    group: served_group.spec.name.clone(),
                    client_wants_usage,
                    cache: match cache {
                        Decision::Use { key, ttl, .. } => Some((state.cache.clone(), key, ttl)),
                        Decision::Bypass => None,
                    },
                },
            );
            *response.body_mut() = observe(upstream, end);
            Ok(Answer::Streaming(response))
        }
    }
}

/// The body, refusing more than `limit` bytes (by Content-Length before reading, and while
/// reading for chunked bodies).
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::body_too_large(limit));
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::body_too_large(limit))
        }
        Err(e) => Err(ApiError::invalid_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// A header's value as text; a header that is not visible ASCII is a 400.
fn header_text(headers: &http::HeaderMap, name: &'static str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid_request(format!("`{name}` must be ASCII text")))
        })
        .transpose()
}

fn parse_strategy(value: &str) -> Result<Strategy, ApiError> {
    serde_json::from_value(serde_json::Value::String(value.trim().to_owned()))
        .map_err(|_| ApiError::invalid_strategy(value))
}

/// About four bytes of JSON per token: good enough to rank deployments by expected cost.
fn estimate_prompt_tokens(endpoint: Endpoint, request: &JsonRequest) -> u64 {
    let field = match endpoint {
        Endpoint::ChatCompletions => "messages",
        Endpoint::Embeddings => "input",
        Endpoint::ImageGenerations => "prompt",
    };
    request.raw(field).map_or(0, |raw| raw.len() as u64 / 4)
}

fn checked_metadata(
    metadata: Option<BTreeMap<String, String>>,
) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    if let Some(m) = &metadata
        && (m.len() > MAX_METADATA_ENTRIES
            || m.iter()
                .any(|(k, v)| k.len() + v.len() > MAX_METADATA_BYTES))
    {
        return Err(ApiError::invalid_request(format!(
            "modelgate.metadata takes at most {MAX_METADATA_ENTRIES} entries of at most {MAX_METADATA_BYTES} bytes each"
        ))
        .with_param(EXTENSION_FIELD));
    }
    Ok(metadata)
}

fn call_for<'a>(
    endpoint: Endpoint,
    request: &'a JsonRequest,
    stream: bool,
    deployment: &'a Deployment,
    state: &'a AppState,
    key: &KeyEntry,
) -> Call<'a> {
    let timeouts = timeouts_for(key, deployment);
    Call {
        endpoint,
        request,
        stream,
        deployment: &deployment.spec,
        http: state.http.with_connect_timeout(timeouts.connect),
        timeouts,
    }
}

/// The deployment's own timeouts, else its caller's policy's, else the built-in defaults.
fn timeouts_for(key: &KeyEntry, deployment: &Deployment) -> AttemptTimeouts {
    let own = &deployment.spec.timeouts;
    let policy = key.policy.as_ref().map(|p| &p.spec.timeouts);
    let pick = |own: Option<u64>, from_policy: Option<u64>, default: Duration| {
        own.or(from_policy).map_or(default, Duration::from_millis)
    };
    AttemptTimeouts {
        first_byte: pick(
            own.first_byte_ms,
            policy.and_then(|p| p.first_byte_ms),
            DEFAULT_FIRST_BYTE,
        ),
        idle: pick(own.idle_ms, policy.and_then(|p| p.idle_ms), DEFAULT_IDLE),
        connect: pick(
            own.connect_ms,
            policy.and_then(|p| p.connect_ms),
            DEFAULT_CONNECT_TIMEOUT,
        ),
    }
}

/// Attempts that called a provider (links skipped on an open breaker are in the chain, not here).
fn calls_made(attempts: &[AttemptRecord]) -> usize {
    attempts
        .iter()
        .filter(|a| a.outcome != resilience::BREAKER_OPEN)
        .count()
}

fn attempts_header(count: usize) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("x-modelgate-attempts"),
        HeaderValue::from(count),
    )
}

/// Stable codes for the provider errors a client may want to branch on.
fn client_error_code(provider_code: Option<&str>) -> &'static str {
    match provider_code {
        Some(CONTEXT_LENGTH_EXCEEDED) => CONTEXT_LENGTH_EXCEEDED,
        Some("content_filter" | "content_policy_violation") => "content_policy_violation",
        Some(UNSUPPORTED_PARAMETER) => UNSUPPORTED_PARAMETER,
        _ => "invalid_request",
    }
}
