//! The one executor every endpoint and both streaming modes go through: walks the [`Plan`],
//! moving to the next deployment on connect errors, timeouts, 5xx, 429, misconfigured
//! deployments (401/403/404) and streams that fail before their first content token (or, where
//! the caller's policy commits streams at their head, before the head), and handing the
//! caller's own 4xx straight back.

mod breaker;
mod prime;
mod retry;
mod timeouts;

use std::{fmt::Write as _, time::SystemTime};

use modelgate_crds::routing_policy::StreamCommit;
use tokio::time::Instant;

use breaker::{Breaker, Gate};
pub use breaker::{BreakerSettings, Breakers, Transition};
pub use retry::{RetryBudget, RetryPolicy};
pub use timeouts::{attempt_timeouts, total_timeout};

use crate::{
    config::{Deployment, Snapshot},
    decision::AttemptRecord,
    provider::{
        Call, CallError, ErrorClass, UpstreamBody,
        native::{NativeAnswer, NativeBody},
    },
    route::{Plan, PlannedAttempt},
    signals::InFlight,
    telemetry::Metrics,
    trace::AttemptSpan,
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

/// How one request is executed: its caller's org (breakers are per org), the policy's retry and
/// breaker settings, and the deadline across every attempt.
pub struct Execution<'a> {
    pub org: &'a str,
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    pub deadline: Instant,
    pub breakers: &'a Breakers,
    pub budget: &'a RetryBudget,
    pub metrics: &'a Metrics,
    /// Seeds the backoff jitter (the request's routing seed).
    pub seed: u64,
    /// When a streamed answer stops failing over: at its first content token, or at its head.
    pub stream_commit: StreamCommit,
}

/// What running a plan came to.
pub struct Executed {
    pub result: Result<Served, Failed>,
    /// Whether the request went on to the plan's wider links (its context-window fallbacks).
    pub widened: bool,
}

/// Runs the plan. `make_call` builds the provider call for one deployment. When a provider finds
/// the request too long for its context window, the plan's wider links get it next, with the
/// attempts so far in front of their own.
pub async fn execute<'a, F>(
    snapshot: &'a Snapshot,
    plan: &Plan,
    run: &Execution<'_>,
    mut make_call: F,
) -> Executed
where
    F: FnMut(&'a Deployment) -> Call<'a>,
{
    let first = run_links(snapshot, &plan.attempts, run, &mut make_call).await;
    match (first, &plan.wider) {
        (Err(Failed::Client { error, attempts }), Some(wider))
            if error.class == ErrorClass::ContextLength =>
        {
            let widened = run_links(snapshot, &wider.attempts, run, &mut make_call).await;
            Executed {
                result: after(attempts, widened),
                widened: true,
            }
        }
        (result, _) => Executed {
            result,
            widened: false,
        },
    }
}

/// Runs a list of links.
///
/// Each link: skipped while its breaker is open (unless every link is open: then the one that
/// reopens first is still tried); otherwise tried, and retried with backoff while the error is
/// transient, retries are left and the retry budget allows. A Retry-After cools the link down
/// and moves on when another link exists. The deadline and the attempt cap bound it all.
async fn run_links<'a, F>(
    snapshot: &'a Snapshot,
    links: &[PlannedAttempt],
    run: &Execution<'_>,
    mut make_call: F,
) -> Result<Served, Failed>
where
    F: FnMut(&'a Deployment) -> Call<'a>,
{
    run.budget.deposit();
    let mut state = Attempts {
        run,
        records: Vec::with_capacity(links.len()),
        made: 0,
        rng: fastrand::Rng::with_seed(run.seed.rotate_left(17)),
    };
    let mut open: Option<(PlannedAttempt, Instant)> = None;
    for (index, &planned) in links.iter().enumerate() {
        let deployment = &snapshot.group(planned.group).deployments[planned.deployment];
        if !state.has_room() {
            // Checked before the gate: a probe the gate hands out must really be made.
            break;
        }
        let breaker = run.breakers.get(run.org, &deployment.id);
        if let Gate::Open(until) = breaker.gate(Instant::now()) {
            state.skipped(deployment);
            if open.is_none_or(|(_, soonest)| until < soonest) {
                open = Some((planned, until));
            }
            continue;
        }
        let more_links = index + 1 < links.len();
        for retry in 0..=run.retry.retries_per_link {
            let error = match state
                .attempt(planned, deployment, &breaker, &mut make_call)
                .await
            {
                Step::Finished(done) => return done,
                Step::NoRoom => {
                    return Err(Failed::Exhausted {
                        attempts: state.records,
                    });
                }
                Step::Failed(error) => error,
            };
            let pause = match error.retry_after {
                // The provider said when: another link now beats waiting here.
                Some(_) if more_links => break,
                Some(pause) => pause,
                None => run.retry.backoff(retry, &mut state.rng),
            };
            let retry_left = retry < run.retry.retries_per_link;
            if !retry_left || Instant::now() + pause >= run.deadline || !run.budget.withdraw() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
    }
    if state.made == 0
        && state.has_room()
        && let Some((planned, _)) = open
    {
        // Every link is open: rather than fail without trying, try the one that reopens first.
        let deployment = &snapshot.group(planned.group).deployments[planned.deployment];
        let breaker = run.breakers.get(run.org, &deployment.id);
        if let Step::Finished(done) = state
            .attempt(planned, deployment, &breaker, &mut make_call)
            .await
        {
            return done;
        }
    }
    Err(Failed::Exhausted {
        attempts: state.records,
    })
}

/// What one attempt settled.
enum Step {
    /// The request is answered: served, or refused by the provider as the caller's own mistake.
    Finished(Result<Served, Failed>),
    /// This link failed; the request goes on.
    Failed(CallError),
    /// The attempt cap or the deadline leaves no room for another attempt.
    NoRoom,
}

/// The attempts of one request so far.
struct Attempts<'r> {
    run: &'r Execution<'r>,
    records: Vec<AttemptRecord>,
    made: u32,
    rng: fastrand::Rng,
}

impl Attempts<'_> {
    /// One call to one deployment, recorded, its outcome fed to the breaker.
    async fn attempt<'a, F>(
        &mut self,
        planned: PlannedAttempt,
        deployment: &'a Deployment,
        breaker: &Breaker,
        make_call: &mut F,
    ) -> Step
    where
        F: FnMut(&'a Deployment) -> Call<'a>,
    {
        if !self.has_room() {
            return Step::NoRoom;
        }
        let now = Instant::now();
        self.made += 1;
        let provider = deployment.spec.provider.as_str();
        let in_flight = deployment.signals.begin();
        let mut call = make_call(deployment);
        let span = call.trace.map(|ids| AttemptSpan {
            ids,
            started: SystemTime::now(),
            model: deployment.spec.model.clone(),
            provider_name: deployment.spec.provider.semconv_name(),
            server_address: server_address(&deployment.spec),
        });
        call.timeouts.first_byte = call.timeouts.first_byte.min(self.run.deadline - now);
        let first_byte = call.timeouts.first_byte;
        let answer = deployment.provider.call(call).await;
        let result = match self.run.stream_commit {
            StreamCommit::FirstContent => primed(answer, first_byte).await,
            // The head is the commitment: the stream goes to the client as it comes.
            StreamCommit::Headers => answer,
        };
        let latency_ms = now.elapsed().as_secs_f64() * 1000.0;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.kind.as_str(),
        };
        self.run.metrics.attempt(provider, &deployment.id, outcome);
        self.records.push(AttemptRecord {
            deployment: deployment.id.clone(),
            provider,
            status: match &result {
                Ok(_) => Some(200),
                Err(error) => error.status.map(|s| s.as_u16()),
            },
            latency_ms,
            outcome,
            error: result.as_ref().err().map(|e| e.message.clone()),
            span,
        });
        self.note_health(breaker, deployment, &result);
        match result {
            Ok(body) => Step::Finished(Ok(Served {
                body,
                by: planned,
                attempts: std::mem::take(&mut self.records),
                in_flight,
                started: now,
            })),
            Err(error) if error.is_client_error() => Step::Finished(Err(Failed::Client {
                error,
                attempts: std::mem::take(&mut self.records),
            })),
            Err(error) => Step::Failed(error),
        }
    }

    /// Feeds an attempt's result to the deployment's breaker (for this org), and announces an
    /// opened one to the fleet.
    fn note_health(
        &self,
        breaker: &Breaker,
        deployment: &Deployment,
        result: &Result<UpstreamBody, CallError>,
    ) {
        let transition = match result {
            Ok(_) => breaker.success(Instant::now()),
            // The caller's own mistakes say nothing about the deployment's health.
            Err(error) if error.is_client_error() => None,
            Err(error) => match error.retry_after {
                Some(pause) => breaker.cool_down(Instant::now(), pause),
                None => breaker.failure(Instant::now(), &self.run.breaker),
            },
        };
        if let Some(transition) = transition {
            if transition == Transition::Opened
                && let Some(pause) = breaker.open_for(Instant::now())
            {
                self.run
                    .breakers
                    .announce(self.run.org, &deployment.id, pause);
            }
            self.run.metrics.breaker(transition.as_str());
            tracing::info!(org = self.run.org, deployment = %deployment.id, ?transition, "circuit breaker");
        }
    }

    /// Whether the attempt cap and the deadline leave room for another attempt.
    fn has_room(&self) -> bool {
        self.made < self.run.retry.max_attempts && Instant::now() < self.run.deadline
    }

    /// A link passed over because its breaker is open.
    fn skipped(&mut self, deployment: &Deployment) {
        self.records.push(AttemptRecord {
            deployment: deployment.id.clone(),
            provider: deployment.spec.provider.as_str(),
            status: None,
            latency_ms: 0.0,
            outcome: BREAKER_OPEN,
            error: None,
            span: None,
        });
    }
}

/// The host an attempt calls: the deployment's `baseUrl`, else its provider's own API host.
fn server_address(spec: &modelgate_crds::compiled::CompiledDeployment) -> Option<String> {
    match &spec.base_url {
        Some(url) => http::Uri::try_from(url.as_str())
            .ok()
            .and_then(|uri| uri.host().map(str::to_owned)),
        None => spec
            .provider
            .own_hosts(spec.region.as_deref())
            .into_iter()
            .find(|host| !host.contains('*')),
    }
}

/// The outcome recorded for a link skipped because its breaker was open.
pub const BREAKER_OPEN: &str = "breaker_open";

/// Attempts that called a provider (links skipped on an open breaker are in the chain, not here).
pub fn calls_made(attempts: &[AttemptRecord]) -> usize {
    attempts
        .iter()
        .filter(|a| a.outcome != BREAKER_OPEN)
        .count()
}

/// The outcome of a second plan, with the attempts of the first in front of its own.
fn after(
    mut earlier: Vec<AttemptRecord>,
    result: Result<Served, Failed>,
) -> Result<Served, Failed> {
    let prepend = |later: Vec<AttemptRecord>, earlier: &mut Vec<AttemptRecord>| {
        earlier.extend(later);
        std::mem::take(earlier)
    };
    match result {
        Ok(mut served) => {
            served.attempts = prepend(served.attempts, &mut earlier);
            Ok(served)
        }
        Err(Failed::Client { error, attempts }) => Err(Failed::Client {
            error,
            attempts: prepend(attempts, &mut earlier),
        }),
        Err(Failed::Exhausted { attempts }) => Err(Failed::Exhausted {
            attempts: prepend(attempts, &mut earlier),
        }),
    }
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

/// A stream is committed only once it carries content; failing before that is invisible to the
/// client, so it moves on like any other failed attempt. OpenAI SSE and a client's own API's
/// events are read by their own rules.
async fn primed(
    result: Result<UpstreamBody, CallError>,
    first_byte: std::time::Duration,
) -> Result<UpstreamBody, CallError> {
    match result {
        Ok(UpstreamBody::Stream(stream)) => prime::until_first_content(stream, None, first_byte)
            .await
            .map(UpstreamBody::Stream),
        Ok(UpstreamBody::Native(NativeAnswer {
            api,
            body: NativeBody::Stream(stream),
        })) => prime::until_first_content(stream, Some(api), first_byte)
            .await
            .map(|stream| {
                UpstreamBody::Native(NativeAnswer {
                    api,
                    body: NativeBody::Stream(stream),
                })
            }),
        other => other,
    }
}
