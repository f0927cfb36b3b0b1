//! The compiled config: the Kubernetes-free contract between the operator (or the standalone
//! loader) and the data plane. Plain serde, sorted maps, versioned and checksummed, so equal input
//! gives byte-equal output and an equal checksum.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::common::{Budget, Pricing, Strategy};
use crate::model_group::ProviderKind;

/// Version of the compiled config format. The data plane refuses any other.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything the data plane needs, for every namespace in the input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledConfig {
    /// Always [`SCHEMA_VERSION`] when written by this crate.
    pub schema_version: u32,
    /// SHA-256 (hex) of the config serialized with an empty checksum.
    #[serde(default)]
    pub checksum: String,
    /// Model groups by id (`namespace/name`).
    pub model_groups: BTreeMap<String, CompiledModelGroup>,
    /// Routing policies by id (`namespace/name`).
    pub policies: BTreeMap<String, CompiledPolicy>,
    /// Virtual keys by the SHA-256 (hex) of the key material.
    pub keys: BTreeMap<String, CompiledKey>,
}

/// One model group, with fallbacks resolved to group ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledModelGroup {
    pub namespace: String,
    pub name: String,
    pub models: Vec<String>,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Ids (`namespace/name`) of the fallback groups, in order.
    pub fallbacks: Vec<String>,
    pub deployments: Vec<CompiledDeployment>,
    /// Ids of the groups tried when a request is too long for this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_window_fallbacks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u32>,
}

impl CompiledModelGroup {
    /// Each deployment as routing sees it, for the ModelGroup's status.
    pub fn deployment_statuses(&self) -> Vec<crate::model_group::DeploymentStatus> {
        self.deployments
            .iter()
            .map(|d| {
                let mut tags: Vec<String> = self.tags.iter().chain(&d.tags).cloned().collect();
                tags.sort_unstable();
                tags.dedup();
                crate::model_group::DeploymentStatus {
                    name: d.name.clone(),
                    tags,
                    tags_from: if d.catalog_tags {
                        "catalog"
                    } else {
                        "declared"
                    }
                    .to_owned(),
                    context_window: d.context_window(),
                    price: match (&d.pricing, d.list_price()) {
                        (Some(_), _) => Some("deployment".to_owned()),
                        (None, Some(list)) => Some(format!("catalog {}", list.model)),
                        (None, None) => None,
                    },
                }
            })
            .collect()
    }

    /// Every tag some deployment serves, sorted and comma-separated.
    pub fn served_tags(&self) -> String {
        let mut tags: Vec<&str> = self
            .tags
            .iter()
            .chain(self.deployments.iter().flat_map(|d| &d.tags))
            .map(String::as_str)
            .collect();
        tags.sort_unstable();
        tags.dedup();
        tags.join(",")
    }
}

/// One deployment with its credential resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledDeployment {
    /// Stable id (`namespace/group/deployment`) keying runtime state that survives config swaps.
    pub id: String,
    pub name: String,
    pub provider: ProviderKind,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Whether the connector may reach loopback addresses for this deployment (link-local and
    /// metadata addresses it never reaches).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_loopback: bool,
    /// Where its credentials come from (`secret/key`), so a config published without them can
    /// be completed from the credentials bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_refs: Option<crate::credentials::CredentialRefs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Sensitive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<CompiledAws>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// The deployment's own tags, else its model's catalog capabilities.
    pub tags: Vec<String>,
    /// Whether `tags` came from the catalog.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catalog_tags: bool,
    /// The declared context window (the catalog's is in `catalog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// What the model catalog knows about the model, resolved when the config was compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<crate::catalog::CatalogEntry>,
    pub timeouts: CompiledTimeouts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<CompiledMock>,
}

impl CompiledDeployment {
    /// The context window routing respects: the declared one, else the catalog's.
    pub fn context_window(&self) -> Option<u64> {
        self.context_window
            .or(self.catalog.as_ref().and_then(|c| c.context_window))
    }

    /// The catalog's list price, when the deployment declares no `pricing`.
    pub fn list_price(&self) -> Option<&crate::catalog::ListPrice> {
        match self.pricing {
            Some(_) => None,
            None => self.catalog.as_ref().and_then(|c| c.price.as_ref()),
        }
    }
}

/// AWS access keys resolved from their Secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledAws {
    pub access_key_id: Sensitive,
    pub secret_access_key: Sensitive,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Sensitive>,
}

/// Timeouts in milliseconds; absent means "inherit" (deployment) or "built-in default" (policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
}

/// Settings of the built-in mock provider.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledMock {
    pub latency_ms: u64,
    pub embedding_dimensions: u32,
}

/// One routing policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledPolicy {
    pub namespace: String,
    pub name: String,
    pub orgs: Vec<String>,
    pub teams: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    pub retries: CompiledRetries,
    pub timeouts: CompiledTimeouts,
    pub circuit_breaker: CompiledBreaker,
    pub cache: CompiledCache,
    pub default_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<CompiledAuto>,
    /// Splits by public model name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<String, CompiledSplit>,
    pub allow_strategy_override: bool,
    pub allow_tag_override: bool,
    /// Keys with a budget may call deployments that have no price.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unpriced: bool,
    pub latency_tolerance_percent: u32,
    pub exploration_percent: u32,
    /// When streamed answers are committed (absent: at the first content token).
    #[serde(default, skip_serializing_if = "at_first_content")]
    pub stream_commit: crate::routing_policy::StreamCommit,
    /// Spend tags its callers may attach, by key: the values allowed (empty: any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spend_tags: BTreeMap<String, Vec<String>>,
}

fn at_first_content(commit: &crate::routing_policy::StreamCommit) -> bool {
    *commit == crate::routing_policy::StreamCommit::FirstContent
}

/// The `auto` virtual model of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledAuto {
    pub name: String,
    /// Group ids (`namespace/name`).
    pub groups: Vec<String>,
    pub mode: crate::routing_policy::AutoMode,
}

/// A traffic split of one public model name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledSplit {
    /// (group id, weight) per arm.
    pub arms: Vec<(String, u32)>,
    pub sticky: bool,
}

/// Retry settings, unset fields left to the data plane's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledRetries {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// Circuit breaker settings, unset fields left to the data plane's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledBreaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cooldown_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
}

/// Response cache settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledCache {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub scope: crate::routing_policy::CacheScope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_above_temperature: Option<f64>,
    #[serde(default = "yes")]
    pub hits_count_against_rpm: bool,
}

fn yes() -> bool {
    true
}

impl Default for CompiledCache {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_ms: None,
            scope: crate::routing_policy::CacheScope::Org,
            share_group: None,
            bypass_above_temperature: None,
            hits_count_against_rpm: true,
        }
    }
}

/// One virtual key; the key material itself is only present as the map key's hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledKey {
    pub namespace: String,
    pub name: String,
    pub org: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub allowed_models: Vec<String>,
    pub default_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Unix seconds after which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub metadata: BTreeMap<String, String>,
}

/// A secret value (a provider credential). It serializes as itself, because the compiled config
/// is stored in a Secret and read by the data plane, but it never prints.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sensitive(..)")
    }
}

/// SHA-256 of a virtual key, lowercase hex: the only form in which keys leave their Secret.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Errors reading a compiled config.
#[derive(Debug, thiserror::Error)]
pub enum CompiledConfigError {
    #[error("compiled config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("compiled config has schemaVersion {found}, this data plane reads {SCHEMA_VERSION}")]
    SchemaVersion { found: u32 },
    #[error("compiled config checksum mismatch: file says {stated}, content hashes to {actual}")]
    Checksum { stated: String, actual: String },
}

impl CompiledConfig {
    /// A config with no objects.
    pub fn empty() -> Self {
        let mut config = Self {
            schema_version: SCHEMA_VERSION,
            ..Self::default()
        };
        config.seal();
        config
    }

    /// SHA-256 of the canonical JSON with the checksum field blanked.
    pub fn compute_checksum(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.checksum.clear();
        // Serializing plain structs and BTreeMaps cannot fail.
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Writes the checksum of the current content.
    pub fn seal(&mut self) {
        self.checksum = self.compute_checksum();
    }

    /// Canonical JSON, as published by the operator.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses and checks version and checksum.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CompiledConfigError> {
        let config: Self = serde_json::from_slice(bytes)?;
        if config.schema_version != SCHEMA_VERSION {
            return Err(CompiledConfigError::SchemaVersion {
                found: config.schema_version,
            });
        }
        let actual = config.compute_checksum();
        if actual != config.checksum {
            return Err(CompiledConfigError::Checksum {
                stated: config.checksum,
                actual,
            });
        }
        Ok(config)
    }
}
