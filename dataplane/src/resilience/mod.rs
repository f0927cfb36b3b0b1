//! The one executor every endpoint and both streaming modes go through: walks the [`Plan`],
//! moving to the next deployment on connect errors, timeouts, 5xx, 429, misconfigured
//! deployments (401/403/404) and streams that fail before their first content token, and
//! handing the caller's own 4xx straight back.

mod prime;

use std::fmt::Write as _;

use tokio::time::Instant;

use crate::{
    config::{Deployment, Snapshot},
    provider::{Call, CallError, UpstreamBody},
    route::{Plan, PlannedAttempt, signals::InFlight},
    telemetry::{AttemptRecord, Metrics},
};

/// A deployment answered.
pub struct Served {
    pub body: UpstreamBody,
    pub by: PlannedAttempt,
    pub attempts: Vec<AttemptRecord>,
    /// Counts the call as in flight until dropped (for a stream: when the stream ends).
    pub in_flight: InFlight,
    /// When the successful attempt started.
    pub started: Instant,
}

/// Nothing in the plan answered.
pub enum Failed {
    /// The provider refused the request itself; retrying elsewhere would not help.
    Client {
        error: CallError,
        attempts: Vec<AttemptRecord>,
    },
    /// Every deployment in the plan failed (or the plan was empty).
    Exhausted { attempts: Vec<AttemptRecord> },
}

/// Runs the plan. `make_call` builds the provider call for one deployment.
pub async fn execute<'a, F>(
    snapshot: &'a Snapshot,
    plan: &Plan,
    metrics: &Metrics,
    mut make_call: F,
) -> Result<Served, Failed>
where
    F: FnMut(&'a Deployment) -> Call<'a>,
{
    let mut attempts = Vec::with_capacity(plan.attempts.len());
    for &planned in &plan.attempts {
        let deployment = &snapshot.group(planned.group).deployments[planned.deployment];
        let provider = deployment.spec.provider.as_str();
        let in_flight = deployment.signals.begin();
        let started = Instant::now();
        let call = make_call(deployment);
        let first_byte = call.timeouts.first_byte;
        let result = match deployment.provider.call(call).await {
            // A stream is committed only once it carries content; failing before that is
            // invisible to the client, so it moves on like any other failed attempt.
            Ok(UpstreamBody::Stream(stream)) => prime::until_first_content(stream, first_byte)
                .await
                .map(UpstreamBody::Stream),
            other => other,
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(body) => {
                metrics.attempt(provider, "ok");
                attempts.push(AttemptRecord {
                    deployment: deployment.id.clone(),
                    provider,
                    status: Some(200),
                    latency_ms,
                    outcome: "ok",
                    error: None,
                });
                return Ok(Served {
                    body,
                    by: planned,
                    attempts,
                    in_flight,
                    started,
                });
            }
            Err(error) => {
                metrics.attempt(provider, error.kind.as_str());
                attempts.push(AttemptRecord {
                    deployment: deployment.id.clone(),
                    provider,
                    status: error.status.map(|s| s.as_u16()),
                    latency_ms,
                    outcome: error.kind.as_str(),
                    error: Some(error.message.clone()),
                });
                if error.is_client_error() {
                    return Err(Failed::Client { error, attempts });
                }
                tracing::debug!(deployment = %deployment.spec.id, error = %error.message, "attempt failed; trying the next link");
            }
        }
    }
    Err(Failed::Exhausted { attempts })
}

/// `x-modelgate-fallback-chain`: each link as `deployment;outcome;status;latency_ms`.
pub fn chain_header(attempts: &[AttemptRecord]) -> String {
    let mut out = String::new();
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let status = a.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let _ = write!(
            out,
            "{};{};{};{:.0}ms",
            a.deployment, a.outcome, status, a.latency_ms
        );
    }
    out
}
