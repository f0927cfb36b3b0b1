use super::*;
use crate::{loader::parse_manifests, report::Reason};

mod policies;

const NOW: &str = "2026-06-01T00:00:00Z";

fn now() -> jiff::Timestamp {
    NOW.parse().unwrap()
}

fn resources(yaml: &str) -> Resources {
    let (resources, reports) = parse_manifests(yaml, &|_| None).unwrap();
    assert!(reports.is_empty(), "fixture must parse: {reports:?}");
    resources
}

/// Compiles as a standalone file does.
fn compile_yaml(yaml: &str) -> (CompiledConfig, Vec<ObjectReport>) {
    compile(&resources(yaml), now())
}

/// Compiles as the operator does: objects of tenants of a cluster.
fn compile_cluster(yaml: &str) -> (CompiledConfig, Vec<ObjectReport>) {
    let resources = Resources {
        mode: Mode::Cluster,
        ..resources(yaml)
    };
    compile(&resources, now())
}

fn outcome<'a>(
    reports: &'a [ObjectReport],
    kind: ObjectKind,
    name: &str,
) -> &'a Result<(), Rejection> {
    &reports
        .iter()
        .find(|r| r.kind == kind && r.name == name)
        .unwrap_or_else(|| panic!("no report for {kind:?} {name}"))
        .outcome
}

fn rejection(reports: &[ObjectReport], kind: ObjectKind, name: &str) -> Rejection {
    outcome(reports, kind, name)
        .clone()
        .expect_err("expected a rejection")
}

/// The default namespace belongs to org `acme`; one Secret labelled for both uses, whose
/// credentials may also go to the test upstream on loopback.
const SECRETS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels: {modelgate.io/org: acme}
---
apiVersion: v1
kind: Secret
metadata:
  name: keys
  labels: {modelgate.io/credential: "true", modelgate.io/virtual-key: "true"}
  annotations: {modelgate.io/allowed-hosts: "127.0.0.1"}
stringData:
  alice: sk-mg-alice-0123456789
  bob: sk-mg-bob-0123456789
  short: sk-short
  upstream: upstream-canary-secret
"#;

fn group(name: &str, models: &str, extra: &str) -> String {
    format!(
        r#"
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: {name}}}
spec:
  models: {models}
  deployments:
    - name: d1
      provider: mock
      model: m
{extra}"#
    )
}

fn key(name: &str, extra: &str) -> String {
    format!(
        r#"
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: {name}}}
spec:
  org: acme
{extra}"#
    )
}

#[test]
fn compiles_a_valid_set_with_hashed_keys_only() {
    let yaml = format!(
        "{SECRETS}{}{}{}",
        group("chat", "[gpt-4o-mini, chat]", "  fallbacks: [backup]"),
        group("backup", "[backup]", ""),
        key("alice", "  keySecretRef: {name: keys, key: alice}"),
    );
    let (config, reports) = compile_yaml(&yaml);
    assert!(reports.iter().all(ObjectReport::is_accepted), "{reports:?}");
    assert_eq!(config.model_groups.len(), 2);
    assert_eq!(
        config.model_groups["default/chat"].fallbacks,
        vec!["default/backup"]
    );
    assert_eq!(
        config.model_groups["default/chat"].deployments[0].id,
        "default/chat/d1"
    );
    let hash = crate::hash_key("sk-mg-alice-0123456789");
    assert_eq!(config.keys[&hash].name, "alice");
    let json = String::from_utf8(config.to_json()).unwrap();
    assert!(
        !json.contains("sk-mg-alice"),
        "key material must never reach the compiled config"
    );
    assert_eq!(config.checksum, config.compute_checksum());
}

#[test]
fn equal_input_in_any_order_gives_an_equal_checksum() {
    let a = group("a", "[a]", "");
    let b = group("b", "[b]", "");
    let (one, _) = compile_yaml(&format!("{SECRETS}{a}{b}"));
    let (two, _) = compile_yaml(&format!("{SECRETS}{b}{a}"));
    assert_eq!(one.checksum, two.checksum);
    assert_eq!(one.to_json(), two.to_json());
    let (three, _) = compile_yaml(&format!("{SECRETS}{a}{}", group("b", "[b, b2]", "")));
    assert_ne!(one.checksum, three.checksum);
}

#[test]
fn unknown_fallback_target_is_rejected_and_others_still_compile() {
    let yaml = format!(
        "{}{}",
        group("chat", "[chat]", "  fallbacks: [nope]"),
        group("ok", "[ok]", "")
    );
    let (config, reports) = compile_yaml(&yaml);
    let r = rejection(&reports, ObjectKind::ModelGroup, "chat");
    assert_eq!(r.reason, Reason::UnknownFallback);
    assert!(
        r.message.contains("\"nope\" does not exist"),
        "{}",
        r.message
    );
    assert!(config.model_groups.contains_key("default/ok"));
    assert!(!config.model_groups.contains_key("default/chat"));
}

#[test]
fn fallback_cycles_are_rejected_with_the_cycle_spelled_out() {
    let yaml = format!(
        "{}{}{}",
        group("a", "[a]", "  fallbacks: [b]"),
        group("b", "[b]", "  fallbacks: [a]"),
        group("c", "[c]", "  fallbacks: [a]"),
    );
    let (config, reports) = compile_yaml(&yaml);
    for name in ["a", "b"] {
        let r = rejection(&reports, ObjectKind::ModelGroup, name);
        assert_eq!(r.reason, Reason::FallbackCycle);
        assert!(r.message.contains("a -> b -> a"), "{}", r.message);
    }
    // c is not on the cycle, but its fallback is now unusable.
    let c = rejection(&reports, ObjectKind::ModelGroup, "c");
    assert_eq!(c.reason, Reason::UnknownFallback);
    assert!(
        c.message.contains("rejected (FallbackCycle)"),
        "{}",
        c.message
    );
    assert!(config.model_groups.is_empty());
}

#[test]
fn a_group_cannot_fall_back_to_itself() {
    let (_, reports) = compile_yaml(&group("a", "[a]", "  fallbacks: [a]"));
    assert_eq!(
        rejection(&reports, ObjectKind::ModelGroup, "a").reason,
        Reason::FallbackCycle
    );
}

#[test]
fn a_model_name_claimed_by_two_groups_keeps_the_first() {
    let yaml = format!(
        "{}{}",
        group("first", "[shared, one]", ""),
        group("second", "[two, shared]", "")
    );
    let (config, reports) = compile_yaml(&yaml);
    assert!(outcome(&reports, ObjectKind::ModelGroup, "first").is_ok());
    let r = rejection(&reports, ObjectKind::ModelGroup, "second");
    assert_eq!(r.reason, Reason::DuplicateModel);
    assert!(
        r.message
            .contains("\"shared\" is already served by ModelGroup \"first\""),
        "{}",
        r.message
    );
    assert_eq!(config.model_groups.len(), 1);
}

#[test]
fn the_same_model_name_in_two_namespaces_is_fine() {
    let yaml = format!(
        "{}{}",
        group("a", "[shared]", ""),
        group("b", "[shared]", "").replace("{name: b}", "{name: b, namespace: other}")
    );
    let (config, reports) = compile_yaml(&yaml);
    assert!(reports.iter().all(ObjectReport::is_accepted), "{reports:?}");
    assert_eq!(config.model_groups.len(), 2);
}

#[test]
fn duplicate_deployment_names_are_rejected() {
    let extra = "    - name: d1\n      provider: mock\n      model: m\n";
    let (_, reports) = compile_yaml(&group("a", "[a]", extra));
    let r = rejection(&reports, ObjectKind::ModelGroup, "a");
    assert_eq!(r.reason, Reason::DuplicateDeployment);
    assert!(r.message.contains("\"d1\""));
}

fn upstream_group(base_url: &str) -> String {
    format!(
        r#"
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: g}}
spec:
  models: [g]
  deployments:
    - name: up
      provider: openai-compatible
      model: m
      baseUrl: "{base_url}"
"#
    )
}

#[test]
fn bad_urls_are_rejected() {
    for url in [
        "ftp://example.com/v1",
        "http://user:pw@example.com/v1",
        "not a url",
        "https://example.com/v1?x=1",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
        "http://169.254.1.1:8080/v1",
        "http://[fe80::1]:8080/v1",
    ] {
        for (config, reports) in [
            compile_yaml(&upstream_group(url)),
            compile_cluster(&upstream_group(url)),
        ] {
            assert_eq!(
                rejection(&reports, ObjectKind::ModelGroup, "g").reason,
                Reason::InvalidUrl,
                "{url}"
            );
            assert!(config.model_groups.is_empty());
        }
    }
    // A standalone file's author runs the gateway: loopback is theirs to call.
    let (config, reports) = compile_yaml(&upstream_group("http://127.0.0.1:8080/v1/"));
    assert!(reports[0].is_accepted());
    let deployment = &config.model_groups["default/g"].deployments[0];
    assert_eq!(
        deployment.base_url.as_deref(),
        Some("http://127.0.0.1:8080/v1")
    );
    assert!(deployment.allow_loopback);
}

#[test]
fn in_a_cluster_loopback_upstreams_need_the_namespace_default_policy() {
    for url in [
        "http://127.0.0.1:8080/v1",
        "http://localhost:8000",
        "http://[::1]:9",
    ] {
        let (_, reports) = compile_cluster(&upstream_group(url));
        let refused = rejection(&reports, ObjectKind::ModelGroup, "g");
        assert_eq!(refused.reason, Reason::InvalidUrl, "{url}");
        assert!(
            refused.message.contains("allowLoopbackUpstreams"),
            "{}",
            refused.message
        );
    }
    let team_only = policy(
        "team",
        "  teams: [ml]
  allowLoopbackUpstreams: true",
    );
    let (_, reports) = compile_cluster(&format!(
        "{}{team_only}",
        upstream_group("http://127.0.0.1:1")
    ));
    assert!(
        outcome(&reports, ObjectKind::ModelGroup, "g").is_err(),
        "only the namespace default policy decides"
    );
    let default = policy("default", "  allowLoopbackUpstreams: true");
    let (config, reports) = compile_cluster(&format!(
        "{}{default}",
        upstream_group("http://127.0.0.1:1")
    ));
    assert!(
        outcome(&reports, ObjectKind::ModelGroup, "g").is_ok(),
        "{reports:?}"
    );
    assert!(config.model_groups["default/g"].deployments[0].allow_loopback);
    let (config, _) = compile_cluster(&upstream_group("http://10.1.2.3:8000/v1"));
    assert!(
        !config.model_groups["default/g"].deployments[0].allow_loopback,
        "private ranges are fine, and say nothing about loopback"
    );
}

#[test]
fn openai_compatible_needs_a_base_url() {
    let yaml = upstream_group("x").replace("      baseUrl: \"x\"\n", "");
    let (_, reports) = compile_yaml(&yaml);
    let r = rejection(&reports, ObjectKind::ModelGroup, "g");
    assert_eq!(r.reason, Reason::InvalidUrl);
    assert!(r.message.contains("baseUrl is required"));
}

#[test]
fn negative_prices_are_rejected() {
    let (_, reports) = compile_yaml(&group(
        "a",
        "[a]",
        "      pricing: {input: 1.5, output: -2}",
    ));
    let r = rejection(&reports, ObjectKind::ModelGroup, "a");
    assert_eq!(r.reason, Reason::InvalidPricing);
    assert!(r.message.contains("pricing.output"), "{}", r.message);
}

#[test]
fn unresolved_secret_refs_are_rejected_without_echoing_values() {
    let yaml = format!(
        "{SECRETS}{}{}{}",
        upstream_group("http://127.0.0.1:1/v1").replace(
            "      baseUrl",
            "      credentials: {secretKeyRef: {name: missing, key: k}}\n      baseUrl"
        ),
        key("nokey", "  keySecretRef: {name: keys, key: absent}"),
        key("generated", ""),
    );
    let (_, reports) = compile_yaml(&yaml);
    let g = rejection(&reports, ObjectKind::ModelGroup, "g");
    assert_eq!(g.reason, Reason::SecretNotFound);
    assert!(
        g.message.contains("Secret \"missing\" not found"),
        "{}",
        g.message
    );
    let k = rejection(&reports, ObjectKind::VirtualKey, "nokey");
    assert_eq!(k.reason, Reason::SecretNotFound);
    assert!(k.message.contains("has no key \"absent\""), "{}", k.message);
    // Without keySecretRef the key is looked up in the operator-generated Secret.
    let generated = rejection(&reports, ObjectKind::VirtualKey, "generated");
    assert!(
        generated.message.contains("Secret \"generated-key\""),
        "{}",
        generated.message
    );
    for report in &reports {
        let text = format!("{report:?}");
        for value in [
            "sk-mg-alice",
            "sk-mg-bob",
            "upstream-canary-secret",
            "sk-short",
        ] {
            assert!(!text.contains(value), "{value} echoed in {text}");
        }
    }
}

#[test]
fn a_credential_is_read_only_from_a_secret_labelled_for_it() {
    let unlabelled = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: borrowed}
stringData: {k: borrowed-canary-value-0001}
"#;
    let yaml = format!(
        "{SECRETS}{unlabelled}{}{}",
        upstream_group("http://10.0.0.1:8000/v1").replace(
            "      baseUrl",
            "      credentials: {secretKeyRef: {name: borrowed, key: k}}\n      baseUrl"
        ),
        key("borrower", "  keySecretRef: {name: borrowed, key: k}"),
    );
    let (config, reports) = compile_cluster(&yaml);
    for (kind, name, label) in [
        (ObjectKind::ModelGroup, "g", "modelgate.io/credential=true"),
        (
            ObjectKind::VirtualKey,
            "borrower",
            "modelgate.io/virtual-key=true",
        ),
    ] {
        let refused = rejection(&reports, kind, name);
        assert_eq!(refused.reason, Reason::SecretNotLabelled);
        assert!(refused.reason.is_unresolved_reference());
        assert!(
            refused
                .message
                .contains(&format!("kubectl label secret borrowed {label}")),
            "{}",
            refused.message
        );
    }
    assert!(
        !String::from_utf8(config.to_json())
            .unwrap()
            .contains("borrowed-canary")
    );
}

#[test]
fn a_credential_goes_only_to_hosts_its_secret_allows() {
    let with_credential = |group: &str, provider: &str, extra: &str| {
        provider_group(
            group,
            &format!(
                "      provider: {provider}\n      model: m\n      \
                 credentials: {{secretKeyRef: {{name: keys, key: upstream}}}}\n{extra}"
            ),
        )
    };
    let yaml = format!(
        "{SECRETS}{}{}{}{}{}",
        // Its provider's own host: no baseUrl, or one on the provider's domain.
        with_credential("own", "openai", ""),
        with_credential(
            "azure",
            "azure",
            "      baseUrl: https://team.openai.azure.com"
        ),
        // A host the Secret names.
        with_credential(
            "named",
            "openai-compatible",
            "      baseUrl: http://127.0.0.1:9/v1"
        ),
        // Anywhere else.
        with_credential(
            "elsewhere",
            "openai",
            "      baseUrl: https://collector.example.net/v1"
        ),
        with_credential(
            "lookalike",
            "openai",
            "      baseUrl: https://api.openai.com.example.net"
        ),
    );
    let (config, reports) = compile_yaml(&yaml);
    for accepted in ["own", "azure", "named"] {
        assert!(
            outcome(&reports, ObjectKind::ModelGroup, accepted).is_ok(),
            "{accepted}: {reports:?}"
        );
    }
    for refused in ["elsewhere", "lookalike"] {
        let r = rejection(&reports, ObjectKind::ModelGroup, refused);
        assert_eq!(r.reason, Reason::CredentialHostNotAllowed, "{refused}");
        assert!(
            r.message.contains("modelgate.io/allowed-hosts"),
            "{}",
            r.message
        );
        assert!(!r.message.contains("upstream-canary-secret"));
    }
    assert_eq!(config.model_groups.len(), 3);
}

#[test]
fn a_vertex_service_account_signs_only_for_google_or_allowed_token_hosts() {
    let account = |token_uri: &str| {
        format!(
            r#"
---
apiVersion: v1
kind: Secret
metadata:
  name: sa
  labels: {{modelgate.io/credential: "true"}}
stringData:
  key: '{{"type": "service_account", "token_uri": "{token_uri}", "private_key": "x"}}'
"#
        )
    };
    let vertex = provider_group(
        "vertex",
        "      provider: vertex\n      model: gemini-2.5-flash\n      project: p\n      \
         region: us-central1\n      credentials: {secretKeyRef: {name: sa, key: key}}",
    );
    let (_, google) = compile_yaml(&format!(
        "{}{vertex}",
        account("https://oauth2.googleapis.com/token")
    ));
    assert!(
        outcome(&google, ObjectKind::ModelGroup, "vertex").is_ok(),
        "{google:?}"
    );
    let (_, elsewhere) = compile_yaml(&format!(
        "{}{vertex}",
        account("https://tokens.example.net/token")
    ));
    let r = rejection(&elsewhere, ObjectKind::ModelGroup, "vertex");
    assert_eq!(r.reason, Reason::CredentialHostNotAllowed);
    assert!(r.message.contains("token_uri"), "{}", r.message);
}

#[test]
fn a_key_belongs_to_its_namespace_org_and_a_declared_team() {
    let yaml = format!(
        "{SECRETS}{}{}{}{}{}{}",
        key("named", "  keySecretRef: {name: keys, key: alice}"),
        key("unnamed", "  keySecretRef: {name: keys, key: bob}").replace("  org: acme\n", ""),
        key("foreign", "  keySecretRef: {name: keys, key: upstream}")
            .replace("org: acme", "org: globex"),
        key(
            "teamed",
            "  team: ml\n  keySecretRef: {name: keys, key: upstream}"
        ),
        key(
            "undeclared",
            "  team: finance\n  keySecretRef: {name: keys, key: bob}"
        ),
        policy("ml", "  teams: [ml]"),
    );
    let (config, reports) = compile_cluster(&yaml);
    let foreign = rejection(&reports, ObjectKind::VirtualKey, "foreign");
    assert_eq!(foreign.reason, Reason::OrgMismatch);
    assert!(foreign.message.contains("\"acme\""), "{}", foreign.message);
    let undeclared = rejection(&reports, ObjectKind::VirtualKey, "undeclared");
    assert_eq!(undeclared.reason, Reason::UnknownTeam);
    assert!(outcome(&reports, ObjectKind::VirtualKey, "named").is_ok());
    let unnamed = &config.keys[&crate::hash_key("sk-mg-bob-0123456789")];
    assert_eq!(unnamed.org, "acme", "the namespace's label decides");
    let teamed = &config.keys[&crate::hash_key("upstream-canary-secret")];
    assert_eq!(teamed.team.as_deref(), Some("ml"));
    // Without a label the namespace is an org of its own name.
    let bare = SECRETS.replace("  labels: {modelgate.io/org: acme}\n", "");
    let (_, reports) = compile_cluster(&format!(
        "{bare}{}",
        key("named", "  keySecretRef: {name: keys, key: alice}")
    ));
    assert_eq!(
        rejection(&reports, ObjectKind::VirtualKey, "named").reason,
        Reason::OrgMismatch
    );
}

#[test]
fn every_unpriced_deployment_is_reported() {
    let yaml = format!(
        "{}{}",
        group("free", "[free]", ""),
        group("priced", "[priced]", "      pricing: {input: 1, output: 2}")
            .replace("model: m", "model: m2"),
    );
    let (_, reports) = compile_yaml(&yaml);
    let free = reports.iter().find(|r| r.name == "free").unwrap();
    assert!(free.is_accepted());
    assert_eq!(free.warnings.len(), 1);
    assert_eq!(free.warnings[0].reason, Reason::UnpricedDeployment);
    assert!(free.warnings[0].message.contains("allowUnpriced"));
    let priced = reports.iter().find(|r| r.name == "priced").unwrap();
    assert!(priced.warnings.is_empty());
}

#[test]
fn provider_credentials_resolve_and_never_print() {
    let yaml = format!(
        "{SECRETS}{}",
        upstream_group("http://127.0.0.1:1/v1").replace(
            "      baseUrl",
            "      credentials: {secretKeyRef: {name: keys, key: upstream}}\n      baseUrl"
        )
    );
    let (config, reports) = compile_yaml(&yaml);
    assert!(reports[0].is_accepted(), "{reports:?}");
    let d = &config.model_groups["default/g"].deployments[0];
    assert_eq!(
        d.api_key.as_ref().map(|k| k.expose()),
        Some("upstream-canary-secret")
    );
    assert!(!format!("{config:?}").contains("upstream-canary-secret"));
}

#[test]
fn expired_keys_are_rejected() {
    let yaml = format!(
        "{SECRETS}{}{}",
        key(
            "old",
            "  keySecretRef: {name: keys, key: alice}\n  expiresAt: \"2026-05-31T23:59:59Z\""
        ),
        key(
            "fresh",
            "  keySecretRef: {name: keys, key: bob}\n  expiresAt: \"2026-06-02T00:00:00Z\""
        ),
    );
    let (config, reports) = compile_yaml(&yaml);
    assert_eq!(
        rejection(&reports, ObjectKind::VirtualKey, "old").reason,
        Reason::KeyExpired
    );
    assert!(outcome(&reports, ObjectKind::VirtualKey, "fresh").is_ok());
    let fresh = &config.keys[&crate::hash_key("sk-mg-bob-0123456789")];
    assert_eq!(
        fresh.expires_at,
        Some(
            "2026-06-02T00:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second()
        )
    );
}

#[test]
fn weak_and_duplicate_keys_are_rejected() {
    let yaml = format!(
        "{SECRETS}{}{}{}",
        key("a", "  keySecretRef: {name: keys, key: alice}"),
        key("b", "  keySecretRef: {name: keys, key: alice}"),
        key("short", "  keySecretRef: {name: keys, key: short}"),
    );
    let (config, reports) = compile_yaml(&yaml);
    assert!(outcome(&reports, ObjectKind::VirtualKey, "a").is_ok());
    assert_eq!(
        rejection(&reports, ObjectKind::VirtualKey, "b").reason,
        Reason::DuplicateKey
    );
    assert_eq!(
        rejection(&reports, ObjectKind::VirtualKey, "short").reason,
        Reason::WeakKey
    );
    assert_eq!(config.keys.len(), 1);
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "\n---\napiVersion: modelgate.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}\n"
    )
}

#[test]
fn mock_settings_get_defaults() {
    let (config, _) = compile_yaml(&group("m", "[m]", "      mock: {latency: 25ms}"));
    let mock = config.model_groups["default/m"].deployments[0]
        .mock
        .clone()
        .unwrap();
    assert_eq!(mock.latency_ms, 25);
    assert_eq!(mock.embedding_dimensions, 8);
}

#[test]
fn context_window_fallbacks_must_name_accepted_groups() {
    let yaml = format!(
        "{}{}{}",
        group("small", "[small]", "  contextWindowFallbacks: [large]"),
        group("large", "[large]", ""),
        group("lost", "[lost]", "  contextWindowFallbacks: [nowhere]"),
    );
    let (config, reports) = compile_yaml(&yaml);
    assert_eq!(
        config.model_groups["default/small"].context_window_fallbacks,
        vec!["default/large"]
    );
    let r = rejection(&reports, ObjectKind::ModelGroup, "lost");
    assert_eq!(r.reason, Reason::UnknownFallback);
    assert!(
        r.message.contains("\"nowhere\" does not exist"),
        "{}",
        r.message
    );
}

fn provider_group(name: &str, deployment: &str) -> String {
    format!(
        r#"
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: {name}}}
spec:
  models: [{name}]
  deployments:
    - name: d1
{deployment}"#
    )
}

#[test]
fn provider_settings_compile_and_aws_keys_resolve_without_printing() {
    let yaml = format!(
        "{SECRETS}{}{}",
        provider_group(
            "bedrock",
            "      provider: bedrock\n      model: amazon.nova-pro-v1:0\n      region: us-east-1\n      \
             credentials: {aws: {accessKeyIdRef: {name: keys, key: alice}, \
             secretAccessKeyRef: {name: keys, key: upstream}, sessionTokenRef: {name: keys, key: bob}}}"
        ),
        provider_group(
            "azure",
            "      provider: azure\n      model: gpt-4o-prod\n      baseUrl: https://r.openai.azure.com\n      \
             apiVersion: v1\n      credentials: {secretKeyRef: {name: keys, key: upstream}}"
        ),
    );
    let (config, reports) = compile_yaml(&yaml);
    assert!(reports.iter().all(|r| r.is_accepted()), "{reports:?}");
    let bedrock = &config.model_groups["default/bedrock"].deployments[0];
    assert_eq!(bedrock.region.as_deref(), Some("us-east-1"));
    let aws = bedrock.aws.as_ref().unwrap();
    assert_eq!(aws.access_key_id.expose(), "sk-mg-alice-0123456789");
    assert_eq!(aws.secret_access_key.expose(), "upstream-canary-secret");
    assert_eq!(
        aws.session_token.as_ref().map(|t| t.expose()),
        Some("sk-mg-bob-0123456789")
    );
    assert!(bedrock.api_key.is_none());
    let azure = &config.model_groups["default/azure"].deployments[0];
    assert_eq!(azure.api_version.as_deref(), Some("v1"));
    assert!(!format!("{config:?}").contains("upstream-canary-secret"));
}

#[test]
fn provider_settings_a_provider_cannot_work_without_are_required() {
    let cases = [
        (
            "no-region",
            "      provider: bedrock\n      model: m",
            "region is required for provider bedrock",
        ),
        (
            "no-project",
            "      provider: vertex\n      model: m\n      region: us-central1",
            "project and deployments[d1].region are required for provider vertex",
        ),
        (
            "aws-elsewhere",
            "      provider: anthropic\n      model: m\n      credentials: {aws: \
             {accessKeyIdRef: {name: keys, key: alice}, secretAccessKeyRef: {name: keys, key: bob}}}",
            "credentials.aws is for bedrock deployments, not anthropic",
        ),
        (
            "both",
            "      provider: bedrock\n      model: m\n      region: us-east-1\n      credentials: \
             {secretKeyRef: {name: keys, key: upstream}, aws: {accessKeyIdRef: {name: keys, key: alice}, \
             secretAccessKeyRef: {name: keys, key: bob}}}",
            "takes exactly one of secretKeyRef and aws",
        ),
    ];
    for (name, deployment, expected) in cases {
        let (_, reports) = compile_yaml(&format!("{SECRETS}{}", provider_group(name, deployment)));
        let rejected = rejection(&reports, ObjectKind::ModelGroup, name);
        assert_eq!(rejected.reason, Reason::InvalidSpec, "{name}");
        assert!(
            rejected.message.contains(expected),
            "{name}: {}",
            rejected.message
        );
    }
}
