//! `Snapshot`: the compiled config indexed for the request path (key hash -> key, (namespace,
//! model) -> group, caller -> policy). Holds no mutable state: runtime state lives in registries
//! keyed by the stable ids found here, so a swap never resets it.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use http::HeaderValue;
use subtle::ConstantTimeEq;

use modelgate_crds::{
    CompiledConfig,
    compiled::{CompiledDeployment, CompiledKey, CompiledModelGroup, CompiledPolicy},
};

use super::KeyLimits;
use crate::{
    catalog::{self, Price},
    provider::{self, Provider},
    signals::{DeploymentSignals, SignalRegistry},
};

/// Index of a group inside a snapshot.
pub type GroupId = usize;

/// A deployment together with the adapter that speaks its provider's API and its live signals.
pub struct Deployment {
    /// `spec.id`, shared: decision records hold it without copying.
    pub id: Arc<str>,
    /// The whole compiled deployment; boxed so the hot fields below sit close together.
    pub spec: Box<CompiledDeployment>,
    /// What routing reads per candidate, copied out of `spec`.
    pub hot: HotFields,
    pub provider: &'static dyn Provider,
    pub signals: Arc<DeploymentSignals>,
    /// The group's tags and the deployment's own, sorted.
    pub capabilities: Vec<String>,
    /// The same tags as bits of the snapshot's tag index: the check routing does per candidate.
    pub capability_bits: u64,
    /// The name as the answer's `x-modelgate-deployment` (none if not a valid header value).
    pub name_header: Option<HeaderValue>,
}

impl Deployment {
    /// Whether the deployment carries every required tag.
    pub fn serves(&self, required: &TagRequirement<'_>) -> bool {
        match required {
            TagRequirement::Bits(bits) => self.capability_bits & bits == *bits,
            TagRequirement::Unknown => false,
            TagRequirement::Exact(tags) => tags
                .iter()
                .all(|t| self.capabilities.binary_search(t).is_ok()),
        }
    }
}

/// A deployment's fields that routing reads for every candidate of every request.
#[derive(Clone, Copy, Debug)]
pub struct HotFields {
    pub weight: u32,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// The deployment's price (its own, else the catalog's list price of its model).
    pub price: Option<Price>,
    /// Tokens of prompt and answer it accepts (declared, else the catalog's).
    pub context_window: Option<u64>,
}

/// Required capability tags, prepared once per request.
#[derive(Clone, Copy, Debug)]
pub enum TagRequirement<'a> {
    /// Every tag has a bit: a mask compare per candidate.
    Bits(u64),
    /// A tag no deployment in the config carries: nothing matches.
    Unknown,
    /// The config has more distinct tags than bits; compare names.
    Exact(&'a [String]),
}

/// A model group with its fallbacks resolved to indexes.
pub struct Group {
    pub id: Arc<str>,
    /// The group's name, shared with every decision record and metric label of the group.
    pub name: Arc<str>,
    /// The name as the answer's `x-modelgate-routed-model` (none if not a valid header value).
    pub name_header: Option<HeaderValue>,
    /// The deployments' ids in order, shared with every decision record of this group.
    pub deployment_ids: Arc<[Arc<str>]>,
    pub spec: CompiledModelGroup,
    pub deployments: Vec<Deployment>,
    pub fallbacks: Vec<GroupId>,
    /// Groups tried when a request is too long for this one.
    pub context_fallbacks: Vec<GroupId>,
}

/// A virtual key and the policy that applies to it.
pub struct KeyEntry {
    pub hash: [u8; 32],
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
    /// `allowedModels` is empty: every model of the namespace.
    allows_all: bool,
    /// The whole compiled key; boxed to keep the key table small and cache-friendly.
    pub spec: Box<CompiledKey>,
    pub caller: Caller,
    pub policy: Option<Arc<Policy>>,
    /// Budgets and rate limits of the key, its team and its org.
    pub limits: KeyLimits,
    /// The model table of the key's namespace (a key only reaches its own namespace).
    models: Arc<ModelTable>,
}

/// Who a key's requests are recorded and billed under, built once per config so that a request
/// shares these strings instead of copying them.
pub struct Caller {
    /// `namespace/name` of the key.
    pub id: Arc<str>,
    pub org: Arc<str>,
    pub team: Option<Arc<str>>,
}

impl Caller {
    fn of(key: &CompiledKey) -> Self {
        Self {
            id: Arc::from(format!("{}/{}", key.namespace, key.name)),
            org: Arc::from(key.org.as_str()),
            team: key.team.as_deref().map(Arc::from),
        }
    }
}

/// Model name -> group, for one namespace.
type ModelTable = HashMap<String, GroupId>;

impl KeyEntry {
    /// The group serving `model` in the key's namespace.
    pub fn resolve_model(&self, model: &str) -> Option<GroupId> {
        self.models.get(model).copied()
    }

    /// Whether the key's `allowedModels` (model or group names; empty = all) admit this call.
    pub fn may_use(&self, model: &str, group: &str) -> bool {
        self.allows_all
            || self
                .spec
                .allowed_models
                .iter()
                .any(|a| a == model || a == group)
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
    /// Keys by the first 8 bytes of their hash; the full hash is compared in constant time.
    keys: HashMap<u64, KeyEntry>,
    /// Keys whose first 8 bytes collide with another key's (practically never).
    colliding_keys: Vec<KeyEntry>,
    /// Bit of each capability tag, when the config has at most 64 distinct tags.
    tag_bits: Option<HashMap<String, u32>>,
}

impl Snapshot {
    /// Builds the indexes.
    pub fn build(config: CompiledConfig, signals: &SignalRegistry) -> Result<Self, SnapshotError> {
        let tag_bits = tag_bits(&config);
        let group_index: HashMap<&str, GroupId> = config
            .model_groups
            .keys()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut models: HashMap<String, ModelTable> = HashMap::new();
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
                .map(|d| {
                    let provider = provider::registry(d.provider);
                    let mut capabilities: Vec<String> =
                        spec.tags.iter().chain(&d.tags).cloned().collect();
                    capabilities.sort_unstable();
                    capabilities.dedup();
                    let capability_bits = tag_bits.as_ref().map_or(0, |bits| {
                        capabilities
                            .iter()
                            .filter_map(|t| bits.get(t))
                            .fold(0, |m, b| m | 1 << b)
                    });
                    Deployment {
                        id: Arc::from(d.id.as_str()),
                        spec: Box::new(d.clone()),
                        hot: HotFields {
                            weight: d.weight,
                            rpm: d.rpm,
                            tpm: d.tpm,
                            price: catalog::price_of(d),
                            context_window: d.context_window(),
                        },
                        provider,
                        signals: signals.get(&d.id),
                        capabilities,
                        capability_bits,
                        name_header: HeaderValue::from_str(&d.name).ok(),
                    }
                })
                .collect();
            let fallbacks = spec
                .fallbacks
                .iter()
                .filter_map(|f| group_index.get(f.as_str()).copied())
                .collect();
            let context_fallbacks = spec
                .context_window_fallbacks
                .iter()
                .filter_map(|f| group_index.get(f.as_str()).copied())
                .collect();
            let deployments: Vec<Deployment> = deployments;
            groups.push(Group {
                id: Arc::from(id.as_str()),
                name: Arc::from(spec.name.as_str()),
                name_header: HeaderValue::from_str(&spec.name).ok(),
                deployment_ids: deployments.iter().map(|d| d.id.clone()).collect(),
                spec: spec.clone(),
                deployments,
                fallbacks,
                context_fallbacks,
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
        let models: HashMap<String, Arc<ModelTable>> = models
            .into_iter()
            .map(|(ns, table)| (ns, Arc::new(table)))
            .collect();
        let empty = Arc::new(ModelTable::new());
        let mut keys: HashMap<u64, KeyEntry> = HashMap::with_capacity(config.keys.len());
        let mut colliding_keys = Vec::new();
        for (hash_hex, spec) in &config.keys {
            let hash = decode_hash(hash_hex)?;
            let selected = KeyPolicies::of(&policies, spec);
            let entry = KeyEntry {
                hash,
                expires_at: spec.expires_at,
                allows_all: spec.allowed_models.is_empty(),
                limits: selected.limits(spec),
                spec: Box::new(spec.clone()),
                caller: Caller::of(spec),
                policy: selected.routing(),
                models: models.get(&spec.namespace).unwrap_or(&empty).clone(),
            };
            match keys.entry(bucket(&hash)) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(entry);
                }
                std::collections::hash_map::Entry::Occupied(_) => colliding_keys.push(entry),
            }
        }
        let live: HashSet<&str> = groups
            .iter()
            .flat_map(|g| g.deployments.iter().map(|d| d.spec.id.as_str()))
            .collect();
        signals.retain(&live);
        Ok(Self {
            checksum: config.checksum,
            groups,
            keys,
            colliding_keys,
            tag_bits,
        })
    }

    /// Prepares `required` (sorted tag names) for the per-candidate check.
    pub fn tag_requirement<'a>(&self, required: &'a [String]) -> TagRequirement<'a> {
        let Some(bits) = &self.tag_bits else {
            return TagRequirement::Exact(required);
        };
        let mut mask = 0u64;
        for tag in required {
            match bits.get(tag) {
                Some(bit) => mask |= 1 << bit,
                None => return TagRequirement::Unknown,
            }
        }
        TagRequirement::Bits(mask)
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

    /// The key whose hash is `hash`.
    pub fn key(&self, hash: &[u8; 32]) -> Option<&KeyEntry> {
        let matches = |entry: &&KeyEntry| bool::from(entry.hash.ct_eq(hash));
        self.keys
            .get(&bucket(hash))
            .filter(matches)
            .or_else(|| self.colliding_keys.iter().find(matches))
    }

    /// Models `key` may call: (model name, group), sorted by name.
    pub fn models_for<'s>(&'s self, key: &'s KeyEntry) -> Vec<(&'s str, &'s Group)> {
        let mut out: Vec<(&str, &Group)> = key
            .models
            .iter()
            .map(|(model, group)| (model.as_str(), &self.groups[*group]))
            .filter(|(model, group)| key.may_use(model, &group.spec.name))
            .collect();
        out.sort_unstable_by_key(|(model, _)| *model);
        out
    }

    /// Every model name of the config with its group, sorted by name (then namespace).
    pub fn all_models(&self) -> Vec<(&str, &Group)> {
        let mut out: Vec<(&str, &Group)> = self
            .groups
            .iter()
            .flat_map(|g| g.spec.models.iter().map(move |m| (m.as_str(), g)))
            .collect();
        out.sort_unstable_by_key(|(model, group)| (*model, &group.spec.namespace));
        out
    }

    /// Deployments without declared tags, with the catalog capabilities they serve.
    pub fn catalog_tagged(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.groups.iter().flat_map(|g| {
            g.deployments
                .iter()
                .filter(|d| d.spec.catalog_tags)
                .map(|d| (&*d.id, &d.spec.tags[..]))
        })
    }

    /// Deployments without `pricing`, with the catalog model whose list price costs them.
    pub fn catalog_priced(&self) -> impl Iterator<Item = (&str, &str)> {
        self.groups.iter().flat_map(|g| {
            g.deployments.iter().filter_map(|d| {
                let list = d.spec.list_price()?;
                Some((&*d.id, list.model.as_str()))
            })
        })
    }
}

/// A bit per distinct capability tag, or `None` past 64 tags.
fn tag_bits(config: &CompiledConfig) -> Option<HashMap<String, u32>> {
    let mut tags: Vec<&String> = config
        .model_groups
        .values()
        .flat_map(|g| {
            g.tags
                .iter()
                .chain(g.deployments.iter().flat_map(|d| &d.tags))
        })
        .collect();
    tags.sort_unstable();
    tags.dedup();
    (tags.len() <= 64).then(|| {
        tags.into_iter()
            .zip(0u32..)
            .map(|(t, b)| (t.clone(), b))
            .collect()
    })
}

/// The policies that select a key: by its team, by its org, and the namespace default.
struct KeyPolicies<'a> {
    team: Option<&'a Arc<Policy>>,
    org: Option<&'a Arc<Policy>>,
    default: Option<&'a Arc<Policy>>,
}

impl<'a> KeyPolicies<'a> {
    fn of(policies: &'a [Arc<Policy>], key: &CompiledKey) -> Self {
        let in_ns = || {
            policies
                .iter()
                .filter(|p| p.spec.namespace == key.namespace)
        };
        Self {
            team: key
                .team
                .as_ref()
                .and_then(|team| in_ns().find(|p| p.spec.teams.contains(team))),
            org: in_ns().find(|p| p.spec.orgs.contains(&key.org)),
            default: in_ns().find(|p| p.spec.orgs.is_empty() && p.spec.teams.is_empty()),
        }
    }

    /// The one that routes the key: team beats org, which beats the namespace default.
    fn routing(&self) -> Option<Arc<Policy>> {
        self.team.or(self.org).or(self.default).cloned()
    }

    /// Budgets and rate limits: the key's own, its team's and its org's, all enforced.
    fn limits(&self, key: &CompiledKey) -> KeyLimits {
        KeyLimits::new(key, self.team.map(|p| &p.spec), self.org.map(|p| &p.spec))
    }
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
