//! The execute step: the caller's retry, breaker and timeout settings, the provider call for
//! each link, and what the client is told when no link answers.

use http::{HeaderName, HeaderValue, StatusCode};
use tokio::time::Instant;

use super::{Services, plan};
use crate::{
    config::{Deployment, KeyEntry, Snapshot},
    decision::DecisionRecord,
    error::ApiError,
    finish::Refused,
    provider::Call,
    request::Parsed,
    resilience::{
        self, BreakerSettings, Execution, Failed, RetryPolicy, Served, attempt_timeouts,
        calls_made, total_timeout,
    },
    route::Routed,
    trace::RequestTrace,
};

const ATTEMPTS: &str = "x-modelgate-attempts";
const FALLBACK_CHAIN: &str = "x-modelgate-fallback-chain";

pub(super) async fn execute(
    services: &Services,
    snapshot: &Snapshot,
    key: &KeyEntry,
    request: &Parsed,
    (mut routed, seed): (Routed, u64),
    started: Instant,
    record: &mut DecisionRecord,
) -> Result<Served, Refused> {
    let execution = Execution {
        org: &key.spec.org,
        retry: retry_policy(key, request.options.retries),
        breaker: key
            .policy
            .as_deref()
            .map_or_else(BreakerSettings::default, |p| {
                BreakerSettings::from_compiled(&p.spec.circuit_breaker)
            }),
        deadline: started + total_timeout(key),
        breakers: &services.breakers,
        budget: &services.retry_budget,
        metrics: &services.sinks.metrics,
        seed,
        stream_commit: key
            .policy
            .as_deref()
            .map_or_else(Default::default, |p| p.spec.stream_commit),
    };
    let trace = record.trace;
    let make_call = |deployment| call_for(services, request, deployment, key, trace);
    let executed = resilience::execute(snapshot, &routed.plan, &execution, make_call).await;
    if executed.widened {
        plan::widened(snapshot, &mut routed, record);
    }
    match executed.result {
        Ok(mut served) => {
            record.attempts = std::mem::take(&mut served.attempts);
            Ok(served)
        }
        Err(failed) => Err(refused(failed, record)),
    }
}

/// The policy's retries; a caller may ask for fewer than its policy allows, never more.
fn retry_policy(key: &KeyEntry, asked: Option<u32>) -> RetryPolicy {
    let mut retry = key
        .policy
        .as_deref()
        .map_or_else(RetryPolicy::default, |p| {
            RetryPolicy::from_compiled(&p.spec.retries)
        });
    if let Some(asked) = asked {
        retry.retries_per_link = retry.retries_per_link.min(asked);
    }
    retry
}

fn call_for<'a>(
    services: &'a Services,
    request: &'a Parsed,
    deployment: &'a Deployment,
    key: &KeyEntry,
    trace: Option<RequestTrace>,
) -> Call<'a> {
    let timeouts = attempt_timeouts(key, deployment);
    Call {
        endpoint: request.endpoint,
        request: &request.body,
        native: request.native.as_ref(),
        stream: request.stream,
        deployment: &deployment.spec,
        http: services
            .http
            .client(timeouts.connect, deployment.spec.allow_loopback),
        timeouts,
        // Each attempt is a span of its own, the request's server span its parent.
        trace: trace.map(|trace| trace.server.child()),
    }
}

/// No link answered: the provider's own refusal of the caller's request, or 502 with the chain.
fn refused(failed: Failed, record: &mut DecisionRecord) -> Refused {
    match failed {
        Failed::Client { error, attempts } => {
            let count = calls_made(&attempts);
            record.attempts = attempts;
            Refused {
                error: ApiError::upstream_client_error(
                    error.status.unwrap_or(StatusCode::BAD_REQUEST),
                    error.client_code(),
                    error.message,
                    error.param,
                ),
                headers: vec![(HeaderName::from_static(ATTEMPTS), HeaderValue::from(count))],
            }
        }
        Failed::Exhausted { attempts } => {
            let chain = resilience::chain_header(&attempts);
            let count = calls_made(&attempts);
            record.attempts = attempts;
            let mut headers = vec![(HeaderName::from_static(ATTEMPTS), HeaderValue::from(count))];
            if let Ok(value) = HeaderValue::from_str(&chain) {
                headers.push((HeaderName::from_static(FALLBACK_CHAIN), value));
            }
            Refused {
                error: ApiError::all_deployments_failed(count),
                headers,
            }
        }
    }
}
