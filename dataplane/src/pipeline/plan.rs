//! The routing step: the capability tags the request needs, then the plan, both written into
//! the decision record.

use crate::{
    config::{KeyEntry, Snapshot},
    decision::DecisionRecord,
    error::ApiError,
    request::Parsed,
    route::{self, RouteInput, Routed, tags::RequestTags},
};

/// Routes the request; returns the routing with its seed (which also seeds the backoff jitter).
pub(super) fn route(
    snapshot: &Snapshot,
    key: &KeyEntry,
    request: &Parsed,
    record: &mut DecisionRecord,
) -> Result<(Routed, u64), ApiError> {
    let options = &request.options;
    let tags = RequestTags::from_request(
        &request.body,
        options.body_tags.clone(),
        options.header_tags.as_deref(),
    )?;
    let policy_tags = key
        .policy
        .as_ref()
        .map_or(&[][..], |p| &p.spec.default_tags[..]);
    let required = tags.required(&key.spec.default_tags, policy_tags);
    let input = RouteInput {
        model: &request.model,
        tags: &required,
        explicit_tags: tags.explicit.is_some(),
        strategy_override: options.strategy,
        fallbacks: options.fallbacks,
        stream: request.stream,
        prompt_tokens: request.prompt_tokens,
        max_tokens: request.max_tokens,
        priced_only: key.limits.has_budget()
            && !key.policy.as_ref().is_some_and(|p| p.spec.allow_unpriced),
        seed: fastrand::u64(..),
    };
    let seed = input.seed;
    let mut routed = route::route(snapshot, key, &input)?;
    record.group = Some(snapshot.group(routed.group).name.clone());
    record.strategy = routed
        .record
        .groups
        .first()
        .map_or("none", |g| g.strategy.as_str());
    record.plan = routed
        .plan
        .attempts
        .iter()
        .map(|a| snapshot.group(a.group).deployments[a.deployment].id.clone())
        .collect();
    record.routing = Some(std::mem::take(&mut routed.record));
    if routed.widened {
        record.context_window_routing = routed.wider_record.take();
    }
    Ok((routed, seed))
}

/// The wider links went into action: the record shows them and how they were ranked.
pub(super) fn widened(snapshot: &Snapshot, routed: &mut Routed, record: &mut DecisionRecord) {
    if let Some(wider) = &routed.plan.wider {
        record.plan.extend(
            wider
                .attempts
                .iter()
                .map(|a| snapshot.group(a.group).deployments[a.deployment].id.clone()),
        );
    }
    record.context_window_routing = routed.wider_record.take();
}
