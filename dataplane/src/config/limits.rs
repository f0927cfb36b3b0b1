//! The budgets and rate limits that apply to a key (its own, its team's, its org's), worked out
//! once per snapshot; the limiter enforces them.

use modelgate_crds::{
    common::Budget,
    compiled::{CompiledKey, CompiledPolicy},
    spend::Subject,
};

/// A counter identity, owned: who a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Key {
        namespace: String,
        name: String,
    },
    Team {
        namespace: String,
        org: String,
        team: String,
    },
    Org {
        namespace: String,
        org: String,
    },
}

impl Owner {
    pub(crate) fn subject(&self) -> Subject<'_> {
        match self {
            Self::Key { namespace, name } => Subject::Key { namespace, name },
            Self::Team {
                namespace,
                org,
                team,
            } => Subject::Team {
                namespace,
                org,
                team,
            },
            Self::Org { namespace, org } => Subject::Org { namespace, org },
        }
    }
}

/// The limits of one scope (the key itself, its team, its org).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScopeLimits {
    pub(crate) owner: Owner,
    pub(crate) budget: Option<Budget>,
    pub(crate) rpm: Option<u64>,
    pub(crate) tpm: Option<u64>,
}

/// Every limit that applies to a key, worked out once per config snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyLimits {
    scopes: Vec<ScopeLimits>,
    metered: Vec<Owner>,
}

impl KeyLimits {
    /// The key's own limits, its team policy's and its org policy's `limits`. A policy that is
    /// both (it names the team and the org) counts once, as the team's.
    pub fn new(
        key: &CompiledKey,
        team_policy: Option<&CompiledPolicy>,
        org_policy: Option<&CompiledPolicy>,
    ) -> Self {
        let mut scopes = vec![ScopeLimits {
            owner: Owner::Key {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            },
            budget: key.budget.clone(),
            rpm: key.rpm,
            tpm: key.tpm,
        }];
        if let (Some(team), Some(policy)) = (&key.team, team_policy) {
            scopes.push(ScopeLimits {
                owner: Owner::Team {
                    namespace: key.namespace.clone(),
                    org: key.org.clone(),
                    team: team.clone(),
                },
                budget: policy.budget.clone(),
                rpm: policy.rpm,
                tpm: policy.tpm,
            });
        }
        let org_policy = org_policy.filter(|org| {
            team_policy.is_none_or(|team| {
                (team.namespace.as_str(), team.name.as_str())
                    != (org.namespace.as_str(), org.name.as_str())
            })
        });
        if let Some(policy) = org_policy {
            scopes.push(ScopeLimits {
                owner: Owner::Org {
                    namespace: key.namespace.clone(),
                    org: key.org.clone(),
                },
                budget: policy.budget.clone(),
                rpm: policy.rpm,
                tpm: policy.tpm,
            });
        }
        // Spend is counted for every scope, budgeted or not: a scope without a budget by the
        // calendar month, so `kubectl get vk` and the policy status can show it.
        let metered = scopes
            .iter()
            .filter(|s| s.budget.is_none())
            .map(|s| s.owner.clone())
            .collect();
        scopes.retain(|s| s.budget.is_some() || s.rpm.is_some() || s.tpm.is_some());
        Self { scopes, metered }
    }

    /// The scopes without a budget, whose spend is only counted.
    pub(crate) fn metered(&self) -> &[Owner] {
        &self.metered
    }

    /// No budget or rate limit applies (spend may still be counted).
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Whether any budget applies (the key's own, its team's or its org's).
    pub fn has_budget(&self) -> bool {
        self.scopes.iter().any(|s| s.budget.is_some())
    }

    pub(crate) fn scopes(&self) -> &[ScopeLimits] {
        &self.scopes
    }
}
