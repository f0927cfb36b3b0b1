//! `Snapshot`: the compiled config indexed for the request path (key hash -> key, (namespace,
//! model) -> group, caller -> policy). Holds no mutable state: runtime state lives in registries
//! keyed by the stable ids found here, so a swap never resets it.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use subtle::ConstantTimeEq;

use modelgate_crds::{
    CompiledConfig,
    compiled::{CompiledDeployment, CompiledKey, CompiledModelGroup, CompiledPolicy},
};

use crate::{
    provider::{self, Provider},
    route::signals::{DeploymentSignals, SignalRegistry},
};

/// Index of a group inside a snapshot.
pub type GroupId = usize;

/// A deployment together with the adapter that speaks its provider's API and its live signals.
pub struct Deployment {
    pub spec: CompiledDeployment,
    pub provider: &'static dyn Provider,
    pub signals: Arc<DeploymentSignals>,
    /// The group's tags and the deployment's own, sorted.
    pub capabilities: Vec<String>,
}

impl Deployment {
    /// Whether the deployment carries every tag in `required` (sorted).
    pub fn has_capabilities(&self, required: &[String]) -> bool {
        required
            .iter()
            .all(|t| self.capabilities.binary_search(t).is_ok())
    }
}

/// A model group with its fallbacks resolved to indexes.
pub struct Group {
    pub id: String,
    pub spec: CompiledModelGroup,
    pub deployments: Vec<Deployment>,
    pub fallbacks: Vec<GroupId>,
}

/// A virtual key and the policy that applies to it.
pub struct KeyEntry {
    pub hash: [u8; 32],
    pub spec: CompiledKey,
    pub policy: Option<Arc<Policy>>,
}

impl KeyEntry {
    /// Whether the key's `allowedModels` (model or group names; empty = all) admit this call.
    pub fn may_use(&self, model: &str, group: &str) -> bool {
        let allowed = &self.spec.allowed_models;
        allowed.is_empty() || allowed.iter().any(|a| a == model || a == group)
    }
}

pub struct Policy {
    pub spec: CompiledPolicy,
    /// `auto`'s groups, resolved.
    pub auto_groups: Vec<GroupId>,
    /// Splits by public model name: arms as (group, weight).
    pub splits: HashMap<String, (Vec<(GroupId, u32)>, bool)>,
}

/// A config that cannot be served; the previous snapshot stays in place.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("virtual key hash {0:?} is not 64 hex digits")]
    BadKeyHash(String),
}

pub struct Snapshot {
    checksum: String,
    groups: Vec<Group>,
    /// namespace -> model name -> group; two levels so lookups borrow `&str` and never allocate.
    models: HashMap<String, HashMap<String, GroupId>>,
    /// Keys bucketed by the first 8 bytes of their hash; the full hash is compared in constant time.
    keys: HashMap<u64, Vec<KeyEntry>>,
    unsupported: Vec<String>,
}

impl Snapshot {
    /// Builds the indexes. Deployments whose provider this data plane has no adapter for are
    /// left out (and listed in [`Snapshot::unsupported`]) rather than failing the whole config.
    pub fn build(config: CompiledConfig, signals: &SignalRegistry) -> Result<Self, SnapshotError> {
        let mut unsupported = Vec::new();
        let group_index: HashMap<&str, GroupId> = config
            .model_groups
            .keys()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut models: HashMap<String, HashMap<String, GroupId>> = HashMap::new();
        let mut groups = Vec::with_capacity(config.model_groups.len());
        for (index, (id, spec)) in config.model_groups.iter().enumerate() {
            for model in &spec.models {
                models
                    .entry(spec.namespace.clone())
                    .or_default()
                    .insert(model.clone(), index);
            }
            let deployments = spec
                .deployments
                .iter()
                .filter_map(|d| match provider::registry(d.provider) {
                    Some(provider) => {
                        let mut capabilities: Vec<String> =
                            spec.tags.iter().chain(&d.tags).cloned().collect();
                        capabilities.sort_unstable();
                        capabilities.dedup();
                        Some(Deployment {
                            spec: d.clone(),
                            provider,
                            signals: signals.get(&d.id),
                            capabilities,
                        })
                    }
                    None => {
                        unsupported.push(format!("{} ({})", d.id, d.provider.as_str()));
                        None
                    }
                })
                .collect();
            let fallbacks = spec
                .fallbacks
                .iter()
                .filter_map(|f| group_index.get(f.as_str()).copied())
                .collect();
            groups.push(Group {
                id: id.clone(),
                spec: spec.clone(),
                deployments,
                fallbacks,
            });
        }

        let resolve = |id: &String| group_index.get(id.as_str()).copied();
        let policies: Vec<Arc<Policy>> = config
            .policies
            .values()
            .map(|spec| {
                let auto_groups = spec
                    .auto
                    .iter()
                    .flat_map(|a| &a.groups)
                    .filter_map(resolve)
                    .collect();
                let splits = spec
                    .splits
                    .iter()
                    .map(|(model, split)| {
                        let arms = split
                            .arms
                            .iter()
                            .filter_map(|(g, w)| Some((resolve(g)?, *w)))
                            .collect();
                        (model.clone(), (arms, split.sticky))
                    })
                    .collect();
                Arc::new(Policy {
                    spec: spec.clone(),
                    auto_groups,
                    splits,
                })
            })
            .collect();
        let mut keys: HashMap<u64, Vec<KeyEntry>> = HashMap::with_capacity(config.keys.len());
        for (hash_hex, spec) in &config.keys {
            let hash = decode_hash(hash_hex)?;
            let policy = policy_for(&policies, spec);
            keys.entry(bucket(&hash)).or_default().push(KeyEntry {
                hash,
                spec: spec.clone(),
                policy,
            });
        }
        let live: HashSet<&str> = groups
            .iter()
            .flat_map(|g| g.deployments.iter().map(|d| d.spec.id.as_str()))
            .collect();
        signals.retain(&live);
        Ok(Self {
            checksum: config.checksum,
            groups,
            models,
            keys,
            unsupported,
        })
    }

    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    pub fn group(&self, id: GroupId) -> &Group {
        &self.groups[id]
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The group serving `model` in `namespace`.
    pub fn resolve_model(&self, namespace: &str, model: &str) -> Option<GroupId> {
        self.models.get(namespace)?.get(model).copied()
    }

    /// The key whose hash is `hash`.
    pub fn key(&self, hash: &[u8; 32]) -> Option<&KeyEntry> {
        self.keys
            .get(&bucket(hash))?
            .iter()
            .find(|entry| bool::from(entry.hash.ct_eq(hash)))
    }

    /// Models `key` may call: (model name, group), sorted by name.
    pub fn models_for<'s>(&'s self, key: &KeyEntry) -> Vec<(&'s str, &'s Group)> {
        let mut out: Vec<(&str, &Group)> = self
            .models
            .get(&key.spec.namespace)
            .into_iter()
            .flatten()
            .map(|(model, group)| (model.as_str(), &self.groups[*group]))
            .filter(|(model, group)| key.may_use(model, &group.spec.name))
            .collect();
        out.sort_unstable_by_key(|(model, _)| *model);
        out
    }

    /// Deployments left out because this data plane has no adapter for their provider.
    pub fn unsupported(&self) -> &[String] {
        &self.unsupported
    }
}

/// A key's team policy beats its org policy, which beats the namespace default.
fn policy_for(policies: &[Arc<Policy>], key: &CompiledKey) -> Option<Arc<Policy>> {
    let in_ns = || {
        policies
            .iter()
            .filter(|p| p.spec.namespace == key.namespace)
    };
    let team = key
        .team
        .as_ref()
        .and_then(|team| in_ns().find(|p| p.spec.teams.contains(team)));
    let org = || in_ns().find(|p| p.spec.orgs.contains(&key.org));
    let default = || in_ns().find(|p| p.spec.orgs.is_empty() && p.spec.teams.is_empty());
    team.or_else(org).or_else(default).cloned()
}

fn bucket(hash: &[u8; 32]) -> u64 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(prefix)
}

fn decode_hash(hex_hash: &str) -> Result<[u8; 32], SnapshotError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out)
        .map_err(|_| SnapshotError::BadKeyHash(hex_hash.to_owned()))?;
    Ok(out)
}
