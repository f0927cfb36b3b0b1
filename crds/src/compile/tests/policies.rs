//! RoutingPolicy: durations, selectors, `auto`, splits and streaming.

use super::*;

#[test]
fn policies_compile_durations_and_refuse_overlapping_selectors() {
    let yaml = format!(
        "{}{}{}{}",
        policy(
            "default",
            "  strategy: least-busy\n  retries: {attempts: 2, backoffBase: 100ms, backoffMax: 2s}\n  cache: {ttl: 1h}"
        ),
        policy("second-default", "  strategy: cost-based"),
        policy("acme", "  orgs: [acme]\n  teams: [ml]"),
        policy("ml-again", "  teams: [ml]"),
    );
    let (config, reports) = compile_yaml(&yaml);
    let default = &config.policies["default/default"];
    assert_eq!(default.retries.backoff_base_ms, Some(100));
    assert_eq!(default.retries.backoff_max_ms, Some(2000));
    assert_eq!(default.cache.ttl_ms, Some(3_600_000));
    assert!(default.cache.enabled, "the cache is on by default");
    let r = rejection(&reports, ObjectKind::RoutingPolicy, "second-default");
    assert_eq!(r.reason, Reason::PolicyConflict);
    assert!(
        r.message
            .contains("the namespace default is already selected by RoutingPolicy \"default\"")
    );
    let r = rejection(&reports, ObjectKind::RoutingPolicy, "ml-again");
    assert!(r.message.contains("team \"ml\""), "{}", r.message);
}

#[test]
fn invalid_durations_are_rejected_with_the_field_named() {
    let (_, reports) = compile_yaml(&policy("p", "  timeouts: {total: 10 minutes}"));
    let r = rejection(&reports, ObjectKind::RoutingPolicy, "p");
    assert_eq!(r.reason, Reason::InvalidSpec);
    assert!(r.message.contains("spec.timeouts.total"), "{}", r.message);
}

#[test]
fn auto_and_splits_resolve_their_groups_and_reject_unknown_ones() {
    let yaml = format!(
        "{}{}{}{}",
        group("cheap", "[cheap]", "  quality: 3\n  defaultMaxTokens: 512"),
        group("strong", "[strong]", ""),
        policy(
            "default",
            "  auto: {groups: [cheap, strong], mode: quality-first}\n  splits:\n    - {model: chat, sticky: true, arms: [{group: cheap, weight: 9}, {group: strong, weight: 1}]}"
        ),
        policy(
            "acme",
            "  orgs: [acme]\n  auto: {name: best, groups: [cheap, missing], mode: cheapest}"
        ),
    );
    let (config, reports) = compile_yaml(&yaml);
    let default = &config.policies["default/default"];
    let auto = default.auto.as_ref().unwrap();
    assert_eq!(auto.name, "auto");
    assert_eq!(auto.groups, vec!["default/cheap", "default/strong"]);
    let split = &default.splits["chat"];
    assert_eq!(
        split.arms,
        vec![
            ("default/cheap".to_owned(), 9),
            ("default/strong".to_owned(), 1)
        ]
    );
    assert!(split.sticky);
    assert!(
        default.allow_tag_override && !default.allow_strategy_override,
        "defaults: tags yes, strategy no"
    );
    assert_eq!(
        (
            default.latency_tolerance_percent,
            default.exploration_percent
        ),
        (10, 5)
    );
    assert_eq!(config.model_groups["default/cheap"].quality, Some(3));
    assert_eq!(
        config.model_groups["default/cheap"].default_max_tokens,
        Some(512)
    );

    let r = rejection(&reports, ObjectKind::RoutingPolicy, "acme");
    assert_eq!(r.reason, Reason::UnknownGroup);
    assert!(r.reason.is_unresolved_reference());
    assert!(
        r.message
            .contains("spec.auto.groups: ModelGroup \"missing\""),
        "{}",
        r.message
    );
}

#[test]
fn splits_need_a_positive_weight_and_a_unique_model() {
    let yaml = format!(
        "{}{}{}",
        group("a", "[a]", ""),
        policy(
            "zero",
            "  orgs: [x]\n  splits: [{model: m, arms: [{group: a, weight: 0}]}]"
        ),
        policy(
            "twice",
            "  orgs: [yy]\n  splits: [{model: m, arms: [{group: a, weight: 1}]}, {model: m, arms: [{group: a, weight: 2}]}]"
        ),
    );
    let (_, reports) = compile_yaml(&yaml);
    assert!(
        rejection(&reports, ObjectKind::RoutingPolicy, "zero")
            .message
            .contains("weight above 0")
    );
    assert!(
        rejection(&reports, ObjectKind::RoutingPolicy, "twice")
            .message
            .contains("split twice")
    );
}

#[test]
fn a_policy_may_commit_streams_at_the_head_and_the_default_is_left_out() {
    use crate::routing_policy::StreamCommit;
    let yaml = format!(
        "{}{}",
        policy("default", "  strategy: cost-based"),
        policy("fast", "  teams: [ml]\n  streaming: {commit: headers}"),
    );
    let (config, reports) = compile_yaml(&yaml);
    assert!(reports.iter().all(|r| r.outcome.is_ok()), "{reports:?}");
    assert_eq!(
        config.policies["default/fast"].stream_commit,
        StreamCommit::Headers
    );
    let default = &config.policies["default/default"];
    assert_eq!(default.stream_commit, StreamCommit::FirstContent);
    // Absent when default, so configs written before the field keep their checksum.
    let json = serde_json::to_string(default).unwrap();
    assert!(!json.contains("streamCommit"), "{json}");
}

#[test]
fn spend_tags_compile_by_key_and_a_key_given_twice_is_refused() {
    let yaml = format!(
        "{}{}",
        policy(
            "default",
            "  spendTags:\n    - {key: stage, values: [embed, generate]}\n    - {key: feature}"
        ),
        policy(
            "acme",
            "  orgs: [acme]\n  spendTags: [{key: stage}, {key: stage, values: [x]}]"
        ),
    );
    let (config, reports) = compile_yaml(&yaml);
    let tags = &config.policies["default/default"].spend_tags;
    assert_eq!(tags["stage"], vec!["embed", "generate"]);
    assert!(tags["feature"].is_empty());
    let r = rejection(&reports, ObjectKind::RoutingPolicy, "acme");
    assert_eq!(r.reason, Reason::InvalidSpec);
    assert!(
        r.message.contains("\"stage\" is given twice"),
        "{}",
        r.message
    );
}
