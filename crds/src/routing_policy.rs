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
}

/// Response cache settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicy {
    /// Serve exact repeats from the cache (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How long an entry lives, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<DurationString>,
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
}
