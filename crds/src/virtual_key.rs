//! `VirtualKey`: a caller's credential for the gateway, with its org, team, models and limits.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Budget, SecretKeySelector};

/// A virtual API key. The key itself lives in a Secret; the spec only references it, and the
/// compiled config holds only its SHA-256 hash.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "modelgate.io",
    version = "v1alpha1",
    kind = "VirtualKey",
    namespaced,
    status = "VirtualKeyStatus",
    shortname = "vk",
    category = "modelgate",
    printcolumn = r#"{"name":"Org","type":"string","jsonPath":".status.org"}"#,
    printcolumn = r#"{"name":"Team","type":"string","jsonPath":".spec.team"}"#,
    printcolumn = r#"{"name":"Budget","type":"number","jsonPath":".spec.budget.limit"}"#,
    printcolumn = r#"{"name":"Period","type":"string","jsonPath":".spec.budget.period"}"#,
    printcolumn = r#"{"name":"Spend","type":"number","jsonPath":".status.spend"}"#,
    printcolumn = r#"{"name":"Remaining","type":"number","jsonPath":".status.remaining"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Served","type":"string","jsonPath":".status.served"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.budget) || self.budget.limit > 0.0").message("budget.limit must be greater than 0"))]
#[serde(rename_all = "camelCase")]
pub struct VirtualKeySpec {
    /// The org the key belongs to; it scopes breakers, cache and org limits. It always comes
    /// from the key's namespace (the namespace's `modelgate.io/org` label, else its name); when
    /// set here it must name that org, or the key is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub org: Option<String>,
    /// The team inside the org; a team RoutingPolicy beats the org's. It must be one a
    /// RoutingPolicy of the key's namespace lists in `teams`, or the key is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub team: Option<String>,
    /// What the key is for, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// The Secret key holding the key material. When absent, the operator generates a key into
    /// the Secret `<name>-key` (key `key`), owned by this VirtualKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeySelector>,
    /// Model names or ModelGroup names the key may call. Empty allows every model in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 253)))]
    pub allowed_models: Vec<String>,
    /// Capability tags required of this key's requests unless a request names its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub default_tags: Vec<String>,
    /// Spend cap for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Requests per minute for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rpm: Option<u64>,
    /// Tokens per minute for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tpm: Option<u64>,
    /// When the key stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Free-form labels copied into the decision log (at most 16).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub metadata: BTreeMap<String, String>,
}

/// The Secret the operator generates key material into when `keySecretRef` is absent.
pub fn generated_key_secret(virtual_key_name: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: format!("{virtual_key_name}-key"),
        key: "key".to_owned(),
    }
}

/// What the operator last observed about a VirtualKey. Never holds key material.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualKeyStatus {
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
    /// The org the key belongs to: its namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// USD spent (settled calls) in the current budget period (the calendar month for a key
    /// without a budget), read from the shared state store when the operator is given one
    /// (`--state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<f64>,
    /// USD left in the current budget period (never below 0); only for a key with a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<f64>,
    /// The period `spend` and `remaining` describe (`d2026-11-23`, `w2026-11-23`, `m2026-11`,
    /// or `total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_period: Option<String>,
}
