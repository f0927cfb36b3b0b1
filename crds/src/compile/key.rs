//! VirtualKey compilation: resolve the key material, keep only its hash.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    compiled::{CompiledKey, CompiledPolicy, hash_key},
    report::{Reason, Rejection},
    virtual_key::{VirtualKey, generated_key_secret},
};

use super::{Compiled, ObjectRef, Resources, SecretIndex, SecretUse, precedence};

/// Shorter keys are guessable; generated keys are far longer.
pub const MIN_KEY_LENGTH: usize = 16;

/// Who a key may say it is: its namespace's org, and a team some RoutingPolicy of its namespace
/// declares. A key's author can write neither on their own.
struct Tenancy<'a> {
    resources: &'a Resources,
    /// (namespace, team) of every team an accepted RoutingPolicy lists.
    teams: BTreeSet<(&'a str, &'a str)>,
}

pub(crate) fn compile_all(
    resources: &Resources,
    secrets: &SecretIndex<'_>,
    policies: &BTreeMap<String, CompiledPolicy>,
    now: jiff::Timestamp,
) -> Compiled<CompiledKey> {
    let tenancy = Tenancy {
        resources,
        teams: policies
            .values()
            .flat_map(|p| p.teams.iter().map(|t| (p.namespace.as_str(), t.as_str())))
            .collect(),
    };
    let mut ordered: Vec<&VirtualKey> = resources.virtual_keys.iter().collect();
    ordered.sort_by_key(|k| precedence(*k));

    let mut accepted = BTreeMap::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for key in ordered {
        let object = ObjectRef::of(key);
        let outcome = compile_one(&object, key, secrets, &tenancy, now).and_then(|(hash, compiled)| {
            if let Some(owner) = owners.get(&hash) {
                return Err(Rejection::new(
                    Reason::DuplicateKey,
                    format!("the key material is the same as VirtualKey \"{owner}\"'s; every key must be unique"),
                ));
            }
            owners.insert(hash.clone(), object.id());
            accepted.insert(hash, compiled);
            Ok(())
        });
        outcomes.push((object, outcome));
    }
    Compiled {
        accepted,
        outcomes,
        warnings: Vec::new(),
    }
}

fn compile_one(
    object: &ObjectRef,
    key: &VirtualKey,
    secrets: &SecretIndex<'_>,
    tenancy: &Tenancy<'_>,
    now: jiff::Timestamp,
) -> Result<(String, CompiledKey), Rejection> {
    let spec = &key.spec;
    let org = tenancy.resources.org_of(&object.namespace);
    if let Some(named) = &spec.org
        && named != org
    {
        return Err(Rejection::new(
            Reason::OrgMismatch,
            format!(
                "spec.org \"{named}\" is not the org of namespace \"{}\", which is \"{org}\" \
                 (the namespace's modelgate.io/org label decides; leave spec.org out or name it)",
                object.namespace
            ),
        ));
    }
    if let Some(team) = &spec.team
        && !tenancy
            .teams
            .contains(&(object.namespace.as_str(), team.as_str()))
    {
        return Err(Rejection::new(
            Reason::UnknownTeam,
            format!(
                "spec.team \"{team}\" is not declared by any RoutingPolicy in namespace \"{}\" \
                 (a policy lists its teams in spec.teams)",
                object.namespace
            ),
        ));
    }
    let expires_at = spec.expires_at.as_ref().map(|t| t.0);
    if let Some(at) = expires_at
        && at <= now
    {
        return Err(Rejection::new(
            Reason::KeyExpired,
            format!("the key expired at {at}"),
        ));
    }
    if let Some(budget) = &spec.budget
        && (!budget.limit.is_finite() || budget.limit <= 0.0)
    {
        return Err(Rejection::new(
            Reason::InvalidSpec,
            "spec.budget.limit must be greater than 0",
        ));
    }
    let selector = spec
        .key_secret_ref
        .clone()
        .unwrap_or_else(|| generated_key_secret(&object.name));
    let material = secrets.resolve(
        &object.namespace,
        &selector,
        "spec.keySecretRef",
        SecretUse::VirtualKey,
    )?;
    let material = material.value.trim();
    if material.len() < MIN_KEY_LENGTH {
        return Err(Rejection::new(
            Reason::WeakKey,
            format!(
                "the key in Secret \"{}\" is shorter than {MIN_KEY_LENGTH} characters",
                selector.name
            ),
        ));
    }
    let compiled = CompiledKey {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        org: org.to_owned(),
        team: spec.team.clone(),
        allowed_models: spec.allowed_models.clone(),
        default_tags: spec.default_tags.clone(),
        budget: spec.budget.clone(),
        rpm: spec.rpm,
        tpm: spec.tpm,
        expires_at: expires_at.map(|t| t.as_second()),
        metadata: spec.metadata.clone(),
    };
    Ok((hash_key(material), compiled))
}
