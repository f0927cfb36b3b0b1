//! The metrics of a finished request, written once from the finish step: its duration and time
//! to first token by where it went, its tokens and cost by who paid, and the retries and
//! fallbacks its attempts made, by reason. Every label value comes from the config or from fixed
//! sets (endpoints, outcomes, status classes), never from the client.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::SystemTime,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::trace::{AttemptSpan, RequestTrace};

/// What the finish step knows about one request, as plain values.
pub struct Finished<'a> {
    pub endpoint: &'static str,
    /// The model name the client asked for (empty before intake).
    pub request_model: &'a str,
    /// The ModelGroup it resolved to (none before routing).
    pub group: Option<&'a Arc<str>>,
    /// The serving (else last tried) attempt's provider and deployment id; `cache` for an
    /// answer from the response cache, `none` when no provider was called.
    pub provider: &'static str,
    pub deployment: Option<&'a Arc<str>>,
    pub status: u16,
    /// The error code the client got, if any.
    pub error_code: Option<&'static str>,
    pub started_at: SystemTime,
    pub seconds: f64,
    pub ttft_seconds: Option<f64>,
    /// `namespace/name` of the key, its org and team (none when unauthenticated).
    pub key: Option<&'a Arc<str>>,
    pub org: Option<&'a Arc<str>>,
    pub team: Option<&'a Arc<str>>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    /// The spend tags the caller's policy allowed.
    pub spend_tags: &'a BTreeMap<String, String>,
    /// Each attempt, in order; links skipped on an open breaker included.
    pub attempts: &'a [Attempt<'a>],
    pub strategy: &'static str,
    /// What the response cache did (`hit`, `miss`, `bypass`, `store-skipped`).
    pub cache: Option<&'static str>,
    pub stream: bool,
    pub finish_reasons: &'a [String],
    /// The trace its spans go to, when traces are exported.
    pub trace: Option<&'a RequestTrace>,
}

/// One attempt of a finished request.
pub struct Attempt<'a> {
    pub deployment: &'a str,
    /// `ok`, the error class, or `breaker_open` for a link skipped.
    pub outcome: &'static str,
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// Its span, when traces are exported (never for a skipped link).
    pub span: Option<&'a AttemptSpan>,
}

// Label values from the config are the snapshot's shared strings (a label set costs reference
// counts, not copies); an absent one reads as the empty value, and none is ever present but
// empty, so each series has one label set.
type Shared = Option<Arc<str>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    endpoint: &'static str,
    group: Shared,
    provider: &'static str,
    deployment: Shared,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FirstTokenLabels {
    endpoint: &'static str,
    group: Shared,
    provider: &'static str,
    deployment: Shared,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PayerLabels {
    org: Shared,
    team: Shared,
    key: Shared,
    group: Shared,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    #[prometheus(flatten)]
    payer: PayerLabels,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TagLabels {
    org: Shared,
    team: Shared,
    group: Shared,
    tag: String,
    value: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TagTokenLabels {
    #[prometheus(flatten)]
    tag: TagLabels,
    direction: &'static str,
}

/// Distinct values counted per tag key on one replica; later ones are counted as `other`. A
/// policy that lists its values never reaches it (it lists at most 64).
const MAX_TAG_VALUES: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

pub(super) struct FinishedMetrics {
    duration: Family<RouteLabels, Histogram>,
    first_token: Family<FirstTokenLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    spend: Family<PayerLabels, Counter<f64, AtomicU64>>,
    tag_tokens: Family<TagTokenLabels, Counter>,
    tag_spend: Family<TagLabels, Counter<f64, AtomicU64>>,
    /// The values seen per tag key, for the [`MAX_TAG_VALUES`] bound.
    tag_values: Mutex<HashMap<String, HashSet<String>>>,
    retries: Family<ReasonLabels, Counter>,
    fallbacks: Family<ReasonLabels, Counter>,
}

impl FinishedMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let histogram = || Histogram::new(LATENCY_BUCKETS);
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of its answer, by endpoint, model group, serving provider and deployment, and status class",
            duration.clone(),
        );
        let first_token = Family::<FirstTokenLabels, Histogram>::new_with_constructor(histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to the first streamed chunk sent to the client",
            first_token.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens billed, by org, team, key, model group and direction (input, output)",
            tokens.clone(),
        );
        let spend = Family::<PayerLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "spend_usd",
            "Cost of served calls in USD by org, team, key and model group",
            spend.clone(),
        );
        let tag_tokens = Family::<TagTokenLabels, Counter>::default();
        registry.register(
            "tokens_by_tag",
            "Tokens billed to requests carrying a spend tag, by org, team, model group, tag, value and direction",
            tag_tokens.clone(),
        );
        let tag_spend = Family::<TagLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "spend_by_tag_usd",
            "Cost in USD of served calls carrying a spend tag, by org, team, model group, tag and value",
            tag_spend.clone(),
        );
        let retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "retries",
            "Attempts that retried the same deployment, by the failure that caused them",
            retries.clone(),
        );
        let fallbacks = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "fallbacks",
            "Moves to the next deployment of the plan, by the failure that caused them",
            fallbacks.clone(),
        );
        Self {
            duration,
            first_token,
            tokens,
            spend,
            tag_tokens,
            tag_spend,
            tag_values: Mutex::default(),
            retries,
            fallbacks,
        }
    }

    pub(super) fn observe(&self, request: &Finished<'_>) {
        self.duration
            .get_or_create(&RouteLabels {
                endpoint: request.endpoint,
                group: request.group.cloned(),
                provider: request.provider,
                deployment: request.deployment.cloned(),
                status_class: status_class(request.status),
            })
            .observe(request.seconds);
        if let Some(ttft) = request.ttft_seconds {
            self.first_token
                .get_or_create(&FirstTokenLabels {
                    endpoint: request.endpoint,
                    group: request.group.cloned(),
                    provider: request.provider,
                    deployment: request.deployment.cloned(),
                })
                .observe(ttft);
        }
        if request.key.is_some() {
            self.bill(request);
        }
        for pair in request.attempts.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            let reason = before.outcome;
            let moves = if before.deployment == after.deployment {
                &self.retries
            } else {
                &self.fallbacks
            };
            moves.get_or_create(&ReasonLabels { reason }).inc();
        }
    }

    fn bill(&self, request: &Finished<'_>) {
        let payer = PayerLabels {
            org: request.org.cloned(),
            team: request.team.cloned(),
            key: request.key.cloned(),
            group: request.group.cloned(),
        };
        for (direction, count) in directions(request) {
            let labels = TokenLabels {
                payer: payer.clone(),
                direction,
            };
            self.tokens.get_or_create(&labels).inc_by(count);
        }
        for (tag, value) in request.spend_tags {
            let labels = TagLabels {
                org: payer.org.clone(),
                team: payer.team.clone(),
                group: payer.group.clone(),
                tag: tag.clone(),
                value: self.bounded(tag, value),
            };
            for (direction, count) in directions(request) {
                let tagged = TagTokenLabels {
                    tag: labels.clone(),
                    direction,
                };
                self.tag_tokens.get_or_create(&tagged).inc_by(count);
            }
            if let Some(usd) = request.cost_usd {
                self.tag_spend.get_or_create(&labels).inc_by(usd);
            }
        }
        if let Some(usd) = request.cost_usd {
            self.spend.get_or_create(&payer).inc_by(usd);
        }
    }

    /// `value`, or `other` once its tag has [`MAX_TAG_VALUES`] others.
    fn bounded(&self, tag: &str, value: &str) -> String {
        let mut seen = crate::sync::lock(&self.tag_values);
        let values = seen.entry(tag.to_owned()).or_default();
        if values.contains(value) || values.len() < MAX_TAG_VALUES {
            values.insert(value.to_owned());
            value.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

/// The request's (direction, tokens), for the directions it used.
fn directions(request: &Finished<'_>) -> impl Iterator<Item = (&'static str, u64)> {
    [
        ("input", request.input_tokens),
        ("output", request.output_tokens),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
