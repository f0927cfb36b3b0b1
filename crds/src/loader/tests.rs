use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "UPSTREAM_KEY" => Some("from-env-secret".to_owned()),
        _ => None,
    }
}

fn now() -> jiff::Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

const GROUP: &str = r#"
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: g}
spec:
  models: ["${NOT_EXPANDED}"]
  deployments:
    - {name: d, provider: openai-compatible, model: m, baseUrl: "http://127.0.0.1:1/v1", credentials: {secretKeyRef: {name: s, key: k}}}
"#;

#[test]
fn expands_env_only_inside_secret_values() {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: s, labels: {{modelgate.io/credential: \"true\"}}, annotations: {{modelgate.io/allowed-hosts: 127.0.0.1}}}}\nstringData:\n  k: \"pre-${{UPSTREAM_KEY}}-$$literal\"\n---\n{GROUP}"
    );
    let (config, reports) = load_config(yaml.as_bytes(), &env, now()).unwrap();
    assert!(reports.iter().all(ObjectReport::is_accepted), "{reports:?}");
    let group = &config.model_groups["default/g"];
    assert_eq!(group.models, vec!["${NOT_EXPANDED}"]);
    assert_eq!(
        group.deployments[0].api_key.as_ref().unwrap().expose(),
        "pre-from-env-secret-$literal"
    );
}

#[test]
fn an_unset_variable_names_the_variable_and_the_secret() {
    let yaml =
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n  k: ${MISSING_VAR}\n";
    let err = load_config(yaml.as_bytes(), &env, now())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MISSING_VAR") && err.contains("\"s\""),
        "{err}"
    );
}

#[test]
fn an_object_that_does_not_deserialize_is_reported_and_the_rest_load() {
    let bad = "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {name: broken}\nspec:\n  models: [x]\n  deployments: [{name: d, provider: nosuch, model: m}]\n";
    let ok = "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {name: fine}\nspec:\n  models: [why]\n  deployments: [{name: d, provider: mock, model: m}]\n";
    let (config, reports) = load_config(format!("{bad}---\n{ok}").as_bytes(), &env, now()).unwrap();
    let broken = reports.iter().find(|r| r.name == "broken").unwrap();
    assert_eq!(
        broken.outcome.as_ref().unwrap_err().reason,
        Reason::InvalidSpec
    );
    assert!(config.model_groups.contains_key("default/fine"));
}

#[test]
fn unsupported_kinds_and_broken_yaml_reject_the_whole_file() {
    let err = load_config(
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        &env,
        now(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("unsupported apiVersion/kind"),
        "{err}"
    );
    assert!(matches!(
        load_config(b"a: [unclosed", &env, now()),
        Err(LoadError::Yaml(_))
    ));
}

#[test]
fn reads_compiled_json_and_checks_version_and_checksum() {
    let yaml = "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {name: g}\nspec:\n  models: [why]\n  deployments: [{name: d, provider: mock, model: m}]\n";
    let (config, _) = load_config(yaml.as_bytes(), &env, now()).unwrap();
    let json = config.to_json();
    let (again, _) = load_config(&json, &env, now()).unwrap();
    assert_eq!(again, config);

    let tampered = String::from_utf8(json.clone())
        .unwrap()
        .replace("\"why\"", "\"z\"");
    assert!(matches!(
        load_config(tampered.as_bytes(), &env, now()),
        Err(LoadError::Compiled(CompiledConfigError::Checksum { .. }))
    ));

    let mut future = config.clone();
    future.schema_version = 99;
    future.seal();
    assert!(matches!(
        load_config(&future.to_json(), &env, now()),
        Err(LoadError::Compiled(CompiledConfigError::SchemaVersion {
            found: 99
        }))
    ));
}

/// Every example a user copies compiles with nothing rejected.
#[test]
fn every_example_compiles_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let env = |name: &str| {
            Some(format!(
                "sk-example-{}-0123456789",
                name.to_ascii_lowercase()
            ))
        };
        let (config, reports) = load_config(&std::fs::read(&path).unwrap(), &env, now())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let rejected: Vec<_> = reports.iter().filter(|r| !r.is_accepted()).collect();
        assert!(rejected.is_empty(), "{}: {rejected:?}", path.display());
        assert!(
            !config.model_groups.is_empty() && !config.keys.is_empty(),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 2, "examples found: {checked}");
}
