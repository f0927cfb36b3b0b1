//! `RoutingPolicy`: how calls of an org, a team or a whole namespace are routed and limited.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DurationString, Limits, Strategy, Timeouts};

/// Routing, resilience, cache and limit settings for the callers it selects. A key's team policy
/// beats its org policy, which beats the namespace default (a policy with neither orgs nor teams).
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "modelgate.io",
    version = "v1alpha1",
    kind = "RoutingPolicy",
    namespaced,
    status = "RoutingPolicyStatus",
    shortname = "rp",
    category = "modelgate",
    printcolumn = r#"{"name":"Orgs","type":"string","jsonPath":".spec.orgs"}"#,
    printcolumn = r#"{"name":"Teams","type":"string","jsonPath":".spec.teams"}"#,
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Served","type":"string","jsonPath":".status.served"}"#,
    printcolumn = r#"{"name":"Spend","type":"string","jsonPath":".status.spend[*].spend"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RoutingPolicySpec {
    /// Orgs this policy applies to. Empty together with `teams` makes it the namespace default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub orgs: Vec<String>,
    /// Teams this policy applies to; a team policy beats an org policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub teams: Vec<String>,
    /// Routing strategy for groups that do not pin one (default simple-shuffle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Retries of one deployment before moving to the next link of the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Timeouts for provider calls; a deployment's own timeouts win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Circuit breaker per (org, deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Response cache settings (the cache is on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    /// Capability tags required of every request that does not ask for its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub default_tags: Vec<String>,
    /// Budget and rate limits shared by everyone the policy selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// A virtual model (default name `auto`) that picks one of several groups per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoModel>,
    /// Public model names split across groups by weight, for rollouts and A/B tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub splits: Vec<TrafficSplit>,
    /// Which per-request overrides callers may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Overrides>,
    /// Tuning of the latency-based strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_based: Option<LatencyBased>,
    /// When a streamed answer is committed to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<Streaming>,
    /// Let keys with a budget call deployments that have no price (no `pricing` and no list
    /// price for their model). Such calls are charged $0, so the budget does not bound them;
    /// by default they are refused (`unpriced_deployment`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unpriced: bool,
    /// On the namespace default policy (no `orgs`, no `teams`) only: ModelGroups of this
    /// namespace may name loopback `baseUrl`s (a model server on the node). Link-local and
    /// cloud metadata addresses are refused regardless.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_loopback_upstreams: bool,
    /// Spend tags the callers it selects may attach to a request (`x-modelgate-spend-tags:
    /// stage=embed`, or `metadata.tags` in the body), so spend is counted by pipeline stage,
    /// feature or customer. Only these keys are accepted, so the metrics stay bounded; a request
    /// naming another key, or a value a tag does not list, is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub spend_tags: Vec<SpendTag>,
}

/// One spend tag callers may attach.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendTag {
    /// The tag's key, e.g. `stage`.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub key: String,
    /// The values it may take. Empty: any value of up to 64 letters, digits and `._:/-` (the
    /// metrics then count the first 100 distinct values per replica, the rest as `other`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._:/-]+$"))
    )]
    pub values: Vec<String>,
}

/// A virtual model that routes each request to the best of several groups.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoModel {
    /// The model name clients send (default `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub name: Option<String>,
    /// Candidate ModelGroups (same namespace).
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 253)))]
    pub groups: Vec<String>,
    /// How the group is picked: cheapest, fastest or quality-first.
    pub mode: AutoMode,
}

/// How `auto` ranks its groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AutoMode {
    /// Lowest expected cost of the request.
    Cheapest,
    /// Lowest recent latency.
    Fastest,
    /// Highest `quality` rank, then lowest cost.
    QualityFirst,
}

/// One public model name split across groups.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.arms.exists(a, a.weight > 0)").message("at least one arm needs a weight above 0"))]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplit {
    /// The model name clients send.
    #[schemars(length(min = 1, max = 128))]
    pub model: String,
    /// The groups that share the traffic.
    #[schemars(length(min = 1, max = 16))]
    pub arms: Vec<SplitArm>,
    /// Keep each virtual key on the same arm.
    #[serde(default)]
    pub sticky: bool,
}

/// One arm of a split.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitArm {
    /// A ModelGroup (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
    /// Relative share of traffic.
    #[schemars(range(min = 0, max = 10000))]
    pub weight: u32,
}

/// Per-request overrides a policy allows.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    /// Callers may pick the strategy with `x-modelgate-strategy` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<bool>,
    /// Callers may name capability tags (`modelgate.tags`, `x-modelgate-tags`) (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<bool>,
}

/// Tuning of the latency-based strategy.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyBased {
    /// Deployments within this percentage of the fastest are shuffled together (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub tolerance_percent: Option<u32>,
    /// Share of requests (percent) sent to a random deployment so recovered ones are measured
    /// again (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub exploration_percent: Option<u32>,
}

/// Retry settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Retries per link after the first attempt (0 = move on at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub attempts: Option<u32>,
    /// First backoff before a retry, e.g. `100ms`; doubled per retry with full jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base: Option<DurationString>,
    /// Ceiling of one backoff, e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<DurationString>,
    /// Most attempts for one request across the whole chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_attempts: Option<u32>,
}

/// Circuit breaker settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Consecutive failures that open the breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_failures: Option<u32>,
    /// How long an open breaker rejects calls before letting one probe through, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationString>,
    /// Ceiling of the cooldown, which grows on repeated trips, e.g. `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cooldown: Option<DurationString>,
    /// Failure rate (percent) over a 30 s window that opens the breaker (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_rate_percent: Option<u32>,
    /// Requests in the window before the failure rate counts (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub min_requests: Option<u32>,
}

/// Response cache settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.scope) || self.scope != 'group' || has(self.shareGroup)").message("scope group needs shareGroup"))]
pub struct CachePolicy {
    /// Serve exact repeats from the cache (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How long an entry lives, e.g. `1h` (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<DurationString>,
    /// Who shares entries: `org` (default: every key of the caller's org), `key` (only the
    /// same key), or `group` (every org whose policy names the same `shareGroup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<CacheScope>,
    /// With `scope: group`: the name of the share group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub share_group: Option<String>,
    /// Requests with a `temperature` above this bypass the cache, for teams that want fresh
    /// samples. Unset: every exact repeat is served from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub bypass_above_temperature: Option<f64>,
    /// Whether a cache hit counts against the caller's RPM (default true; it never costs
    /// budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits_count_against_rpm: Option<bool>,
}

/// Streaming settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Streaming {
    /// When the client gets the response head (default `first-content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<StreamCommit>,
}

/// The moment a streamed answer is committed: from then on a failure ends the stream with an
/// error event instead of moving to the next link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StreamCommit {
    /// At the upstream's first content token: a link that fails before it (an error event, a
    /// broken or stalled stream, a stream with no content) is replaced unseen. The client's
    /// first byte waits for that token.
    #[default]
    FirstContent,
    /// At the upstream's response head: the client gets the head and every event (the role
    /// chunk first) as soon as they arrive; fallback covers only failures before the head.
    Headers,
}

/// Who shares response-cache entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CacheScope {
    /// Every key of the caller's org (in the namespace).
    #[default]
    Org,
    /// Only the same key.
    Key,
    /// Every org whose policy names the same `shareGroup`.
    Group,
}

/// What the operator last observed about a RoutingPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingPolicyStatus {
    /// Accepted, ResolvedRefs and Ready, with reasons a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The metadata.generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Checksum of the published config that includes this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_checksum: Option<String>,
    /// Data planes serving the published config / data planes alive (their heartbeats), e.g.
    /// `3/3`: whether a change reached traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<String>,
    /// What each org and team it selects spent in the current period (its budget's, else the
    /// calendar month), read from the shared state store when the operator is given one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spend: Vec<ScopeSpend>,
}

/// One org's or team's spend in the current period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeSpend {
    /// `org` or `team`.
    pub scope: String,
    pub name: String,
    /// USD spent (settled calls).
    pub spend: f64,
    /// The period (`d2026-11-23`, `w2026-11-23`, `m2026-11` or `total`).
    pub period: String,
}
