//! The request path between the front doors and the finish step, one short API-agnostic line:
//! auth -> intake (and its spend tags) -> route -> cache -> admit -> execute, then [`Finish`]
//! for every outcome. Each step lives in its own module; this one only says their order.

mod admit;
mod execute;
mod plan;
mod spend_tags;

use std::future::Future;

use crate::{
    auth,
    cache::{Cache, Decision},
    config::{ConfigHandle, KeyEntry, Snapshot},
    decision::DecisionRecord,
    error::ApiError,
    finish::{Answer, Bill, Finish, Hit, Outcome, Refused, Rejected, ServedCall, Sinks},
    limits::Limiter,
    provider::HttpClients,
    request::{Endpoint, Parsed},
    resilience::{Breakers, RetryBudget},
    route::Routed,
    trace::RequestTrace,
};

/// What every request shares.
pub struct Services {
    pub config: ConfigHandle,
    /// Budgets and rate limits.
    pub limiter: Limiter,
    pub http: HttpClients,
    /// Circuit breakers per (org, deployment); they outlive config swaps.
    pub breakers: Breakers,
    pub retry_budget: RetryBudget,
    /// Metrics, the decision log and the response cache.
    pub sinks: Sinks,
}

/// Serves one request. `credential` is the key its front door read; `intake` reads and parses
/// the body, and is awaited only once the caller is known.
pub async fn run<F>(
    services: &Services,
    endpoint: Endpoint,
    credential: Option<&str>,
    intake: F,
) -> Result<Answer, Rejected>
where
    F: Future<Output = Result<Parsed, ApiError>>,
{
    let mut finish = Finish::start(&services.sinks, endpoint);
    let started = finish.started();
    let outcome = stages(services, credential, intake, started, &mut finish.record).await;
    finish.answer(outcome).await
}

async fn stages<F>(
    services: &Services,
    credential: Option<&str>,
    intake: F,
    started: tokio::time::Instant,
    record: &mut DecisionRecord,
) -> Result<Outcome, Refused>
where
    F: Future<Output = Result<Parsed, ApiError>>,
{
    let snapshot = services.config.current().ok_or_else(ApiError::not_ready)?;
    record.config_checksum = snapshot.checksum().to_owned();
    let key = auth::authenticate(&snapshot, credential, jiff::Timestamp::now().as_second())?;
    note_caller(key, record);
    let request = intake.await?;
    note_request(&request, record);
    spend_tags::check(key, &request.options.spend_tags)?;
    record.spend_tags = request.options.spend_tags.clone();
    if services.sinks.otel.is_some() {
        record.trace = Some(RequestTrace::new(request.options.traceparent));
    }
    let routed = plan::route(&snapshot, key, &request, record)?;
    let cache = decide_cache(&services.sinks.cache, key, &snapshot, &routed.0, &request);
    if let Some(hit) = lookup(
        services, key, &snapshot, &routed.0, &request, &cache, record,
    )
    .await?
    {
        return Ok(Outcome::Hit(hit));
    }
    let ticket = admit::admit(services, &snapshot, key, &routed.0.plan, &request, record).await?;
    let served =
        execute::execute(services, &snapshot, key, &request, routed, started, record).await?;
    let group = snapshot.group(served.by.group);
    let deployment = &group.deployments[served.by.deployment];
    let call = ServedCall {
        bill: Bill {
            ticket,
            price: deployment.hot.price,
            prompt_tokens: request.prompt_tokens,
        },
        provider: deployment.spec.provider.as_str(),
        routed_model: group.name_header.clone(),
        deployment: deployment.name_header.clone(),
        in_flight: served.in_flight,
        attempt_started: served.started,
        cache: match cache {
            Decision::Use { key, ttl, .. } => Some((key, ttl)),
            Decision::Bypass => None,
        },
    };
    Ok(Outcome::Served {
        call,
        body: served.body,
        client_wants_usage: request.client_wants_usage,
    })
}

fn note_caller(key: &KeyEntry, record: &mut DecisionRecord) {
    record.key_id = Some(key.caller.id.clone());
    record.org = Some(key.caller.org.clone());
    record.team = key.caller.team.clone();
}

fn note_request(request: &Parsed, record: &mut DecisionRecord) {
    record.model = Some(request.model.clone());
    record.api = request.native.as_ref().map(|native| native.api.as_str());
    record.stream = request.stream;
    record.metadata = request.options.metadata.clone();
}

fn decide_cache(
    cache: &Cache,
    key: &KeyEntry,
    snapshot: &Snapshot,
    routed: &Routed,
    request: &Parsed,
) -> Decision {
    cache.decide(
        key,
        snapshot.group(routed.group),
        request.endpoint,
        &request.body,
        request.native.as_ref(),
        !request.options.cache,
    )
}

/// The response cache: an exact repeat is answered here, without a provider, at no cost.
async fn lookup(
    services: &Services,
    key: &KeyEntry,
    snapshot: &Snapshot,
    routed: &Routed,
    request: &Parsed,
    cache: &Decision,
    record: &mut DecisionRecord,
) -> Result<Option<Hit>, Refused> {
    let metrics = &services.sinks.metrics;
    if let Decision::Use {
        key: cache_key,
        hits_count_against_rpm,
        ..
    } = cache
        && let Some(body) = services.sinks.cache.get(cache_key).await
    {
        record.cache = Some("hit");
        metrics.cache("hit");
        if *hits_count_against_rpm {
            admit::admit_hit(services, key, record).await?;
        }
        return Ok(Some(Hit {
            routed_model: snapshot.group(routed.group).name_header.clone(),
            body,
            stream: request.stream,
            client_wants_usage: request.client_wants_usage,
        }));
    }
    let result = if *cache == Decision::Bypass {
        "bypass"
    } else {
        "miss"
    };
    record.cache = Some(result);
    metrics.cache(result);
    Ok(None)
}
