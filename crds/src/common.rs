//! Types shared by the three CRDs: secret references, strategies, durations, prices, limits.

use std::{fmt, str::FromStr, time::Duration};

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every modelgate CRD.
pub const GROUP: &str = "modelgate.io";
/// API version of every modelgate CRD.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` string written in manifests.
pub const API_VERSION: &str = "modelgate.io/v1alpha1";

/// A Secret labelled `modelgate.io/credential: "true"` may hold provider credentials; the
/// operator reads no other Secret for them.
pub const CREDENTIAL_LABEL: &str = "modelgate.io/credential";
/// A Secret labelled `modelgate.io/virtual-key` (any value; `"true"` by hand, the VirtualKey's
/// name on the keys the operator generates) may hold virtual-key material.
pub const VIRTUAL_KEY_LABEL: &str = "modelgate.io/virtual-key";
/// On a credential Secret: the hosts (besides its provider's own API hosts) its credential may
/// be sent to, comma-separated; `*.example.com` matches one label.
pub const ALLOWED_HOSTS_ANNOTATION: &str = "modelgate.io/allowed-hosts";
/// On every data plane's heartbeat Lease (one per pod, in its namespace).
pub const DATA_PLANE_LABEL: &str = "modelgate.io/data-plane";
/// On a heartbeat Lease: the checksum of the config the data plane serves.
pub const SERVED_ANNOTATION: &str = "modelgate.io/config-checksum";
/// On a Namespace: the org of every VirtualKey in it (default: the namespace's name). Set by
/// whoever administers namespaces, never by a key's author.
pub const ORG_LABEL: &str = "modelgate.io/org";

/// A key inside a Secret in the same namespace as the object that references it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Where a deployment's upstream credential comes from: one Secret key, or AWS access keys.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.aws)").message("credentials take exactly one of secretKeyRef and aws"))]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The Secret key holding the provider credential: the API key (Azure `api-key`, Bedrock
    /// API key, ...), or for `vertex` the service-account JSON key. Sent upstream only, never
    /// logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// AWS access keys, for Bedrock requests signed with SigV4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsCredentials>,
}

/// AWS access keys in Secrets (same namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentials {
    /// The access key id (`AKIA...`).
    pub access_key_id_ref: SecretKeySelector,
    /// The secret access key.
    pub secret_access_key_ref: SecretKeySelector,
    /// The session token of temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_ref: Option<SecretKeySelector>,
}

/// How the deployments of a model group are ordered for one request.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Weighted random over healthy deployments (`weight`, default 1).
    #[default]
    SimpleShuffle,
    /// Fewest in-flight requests first.
    LeastBusy,
    /// Most RPM/TPM headroom left against each deployment's declared limits.
    UsageBased,
    /// Lowest recent latency first.
    LatencyBased,
    /// Lowest expected cost per request first.
    CostBased,
}

impl Strategy {
    /// The name used in manifests, headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SimpleShuffle => "simple-shuffle",
            Self::LeastBusy => "least-busy",
            Self::UsageBased => "usage-based",
            Self::LatencyBased => "latency-based",
            Self::CostBased => "cost-based",
        }
    }
}

/// A duration written the Kubernetes way: digits followed by `ms`, `s`, `m` or `h`, optionally
/// chained (`1m30s`). Kept as the original string in the CRD and parsed by the compiler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = "^([0-9]{1,9}(ms|s|m|h))+$"))]
pub struct DurationString(pub String);

/// A duration string that does not follow `^([0-9]+(ms|s|m|h))+$`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: expected digits followed by ms, s, m or h, e.g. 500ms, 30s, 1m30s"
)]
pub struct InvalidDuration(pub String);

impl DurationString {
    /// Parses the string into a [`Duration`].
    pub fn parse(&self) -> Result<Duration, InvalidDuration> {
        self.0.parse::<ParsedDuration>().map(|d| d.0)
    }
}

impl From<&str> for DurationString {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct ParsedDuration(Duration);

impl FromStr for ParsedDuration {
    type Err = InvalidDuration;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDuration(s.to_owned());
        if s.is_empty() {
            return Err(invalid());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return Err(invalid());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (Duration::from_millis(1), 2)
            } else if rest.starts_with('s') {
                (Duration::from_secs(1), 1)
            } else if rest.starts_with('m') {
                (Duration::from_secs(60), 1)
            } else if rest.starts_with('h') {
                (Duration::from_secs(3600), 1)
            } else {
                return Err(invalid());
            };
            rest = &rest[len..];
            let part = unit.checked_mul(u32::try_from(value).map_err(|_| invalid())?);
            total = part
                .and_then(|p| total.checked_add(p))
                .ok_or_else(invalid)?;
        }
        Ok(Self(total))
    }
}

/// Prices in USD per one million tokens.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// USD per 1M prompt (input) tokens.
    #[schemars(range(min = 0.0))]
    #[serde(default)]
    pub input: f64,
    /// USD per 1M completion (output) tokens, reasoning tokens included.
    #[schemars(range(min = 0.0))]
    #[serde(default)]
    pub output: f64,
    /// USD per 1M prompt tokens served from the provider's prompt cache. Defaults to `input`.
    #[schemars(range(min = 0.0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

/// Timeouts for calls to a provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Time allowed to open the TCP (and TLS) connection, e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<DurationString>,
    /// Time allowed until the response head (or the first stream chunk) arrives, e.g. `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<DurationString>,
    /// Longest allowed gap between two chunks of a streamed response, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<DurationString>,
    /// Deadline for the whole request across every attempt, e.g. `300s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<DurationString>,
}

/// The period after which a budget's spend starts again from zero (calendar periods, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// Resets at 00:00 UTC every day.
    Daily,
    /// Resets at 00:00 UTC every Monday.
    Weekly,
    /// Resets at 00:00 UTC on the first day of every month.
    Monthly,
    /// Never resets.
    Total,
}

/// A spend cap in USD over a period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Maximum spend in USD within one period.
    #[schemars(range(min = 0.0))]
    pub limit: f64,
    /// When spend resets: daily, weekly, monthly or total (never).
    pub period: BudgetPeriod,
}

/// Spend and rate limits shared by everyone a RoutingPolicy applies to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Budget for the whole org (or team) this policy selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Requests per minute for the whole org (or team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rpm: Option<u64>,
    /// Tokens per minute for the whole org (or team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tpm: Option<u64>,
}

/// A condition type, reason and message as written into `status.conditions`.
pub mod condition {
    /// The object was compiled into the published config.
    pub const ACCEPTED: &str = "Accepted";
    /// Every reference (Secrets, fallback groups) resolved.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// The object is live in the config the data planes serve.
    pub const READY: &str = "Ready";
    /// Whether every live data plane serves the published config.
    pub const SERVED: &str = "Served";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_durations() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("1s500ms", Duration::from_millis(1500)),
        ];
        for (text, want) in cases {
            assert_eq!(DurationString::from(text).parse(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        for text in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "1d",
            "9999999999s",
            "ms",
        ] {
            assert!(
                DurationString::from(text).parse().is_err(),
                "{text:?} should be rejected"
            );
        }
    }
}
