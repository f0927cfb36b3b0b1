//! The charts as a platform team meets them: `helm lint` clean; `helm template` over a matrix
//! of values, every rendered object accepted by the real API server (server-side dry run); the
//! default render kept as a golden file, so every manifest change shows in a diff
//! (`UPDATE_GOLDEN=1` or `make golden` rewrites it); and secrets never rendered outside a Secret.

use std::path::Path;

use serde_json::Value;

use crate::support::{control_plane, helm, kubectl, kubectl_apply};

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/modelgate");
pub const CRDS_CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/modelgate-crds");

/// `helm template` of the modelgate chart into `namespace` with `sets`; panics with helm's
/// message when it refuses.
pub fn render(plane: &testbin::ControlPlane, namespace: &str, sets: &[&str]) -> String {
    let mut args = vec!["template", "modelgate", CHART, "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(plane, &args)
}

/// The rendered objects, as JSON.
pub fn objects(rendered: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(rendered)
        .unwrap()
        .into_iter()
        .filter(|o| !o.is_null())
        .collect()
}

/// The one object of `kind` named `name`.
pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[test]
fn both_charts_lint_clean() {
    let plane = control_plane();
    for chart in [CHART, CRDS_CHART] {
        helm(plane, &["lint", "--strict", chart]);
    }
}

/// A stand-in CRD (any content accepted) for `kind` of `group`, so objects of the Prometheus
/// operator and cert-manager reach the API server's checks.
fn stand_in_crd(group: &str, kind: &str) -> (String, String) {
    let plural = format!("{}s", kind.to_lowercase());
    let name = format!("{plural}.{group}");
    let crd = format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {name}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
"#,
        singular = kind.to_lowercase()
    );
    (name, crd)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rendering_of_the_values_matrix_is_accepted_by_the_api_server() {
    let plane = control_plane();
    let namespace = plane.namespace("chart").await;
    for other in ["team-b", "team-c"] {
        let _ = kubectl(
            plane,
            &["create", "namespace", &format!("{namespace}-{other}")],
        );
    }
    for (group, kind) in [
        ("monitoring.coreos.com", "ServiceMonitor"),
        ("monitoring.coreos.com", "PrometheusRule"),
        ("cert-manager.io", "Issuer"),
        ("cert-manager.io", "Certificate"),
    ] {
        let (name, crd) = stand_in_crd(group, kind);
        kubectl_apply(plane, &namespace, &crd);
        let (ok, _, stderr) = kubectl(
            plane,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{name}"),
            ],
        );
        assert!(ok, "{stderr}");
    }
    let tenants = format!("tenants={{{namespace}-team-b,{namespace}-team-c}}");
    let matrix: &[(&str, Vec<&str>)] = &[
        ("defaults", vec![]),
        (
            "high availability",
            vec!["operator.replicas=3", "gateway.replicas=3"],
        ),
        (
            "redis",
            vec!["state.redis.existingSecret=redis", "cache.mode=state"],
        ),
        ("autoscaling", vec!["gateway.autoscaling.enabled=true"]),
        (
            "service monitor",
            vec!["metrics.serviceMonitor.enabled=true"],
        ),
        (
            "dashboard and alerts",
            vec![
                "metrics.grafanaDashboard.enabled=true",
                "metrics.prometheusRule.enabled=true",
            ],
        ),
        ("network policy", vec!["networkPolicy.enabled=true"]),
        ("cert-manager", vec!["injector.certManager.enabled=true"]),
        ("no injector", vec!["injector.enabled=false"]),
        (
            "sidecar",
            vec![
                "sidecar.native=false",
                "sidecar.proxyPort=14000",
                "injector.failurePolicy=Fail",
            ],
        ),
        ("tenants", vec![tenants.as_str()]),
        (
            "namespaced operator",
            vec!["operator.watchAllNamespaces=false", tenants.as_str()],
        ),
    ];
    for (case, sets) in matrix {
        let rendered = render(plane, &namespace, sets);
        let mut dry_run = plane.kubectl();
        dry_run.args(["apply", "--dry-run=server", "-f", "-"]);
        let output = testbin::run_with_stdin(dry_run, rendered.as_bytes());
        assert!(
            output.status.success(),
            "{case}: the API server refused the rendered objects: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The dashboard ConfigMap carries the sidecar's discovery label and the dashboard file as it
/// is; the PrometheusRule the rule file's groups. Prometheus' own promtool accepts the rules and
/// its rule engine fires each alert on the situation it describes (`alerts_test.yaml`). Whether
/// their PromQL names what the gateway and operator export is checked against real scrapes (the
/// data plane's metrics test, the operator's spend test).
#[test]
fn the_dashboard_and_alerts_ship_as_their_files_and_the_alerts_fire_when_they_should() {
    let plane = control_plane();
    let rendered = objects(&render(
        plane,
        "monitoring",
        &[
            "metrics.grafanaDashboard.enabled=true",
            "metrics.grafanaDashboard.annotations.grafana_folder=LLM",
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=prometheus",
        ],
    ));
    let root = testbin::monitoring::root();
    let dashboard = object(&rendered, "ConfigMap", "modelgate-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "LLM"
    );
    let shipped: Value = serde_json::from_str(
        dashboard["data"]["modelgate.json"]
            .as_str()
            .expect("the dashboard in the ConfigMap"),
    )
    .unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join(testbin::monitoring::DASHBOARD)).unwrap(),
    )
    .unwrap();
    assert_eq!(shipped, file);

    let rule = object(&rendered, "PrometheusRule", "modelgate");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let alerts = root.join(testbin::monitoring::ALERTS);
    let file: Value = serde_saphyr::from_str(&std::fs::read_to_string(&alerts).unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);

    if let Err(problems) = testbin::promtool::check_rules(&alerts) {
        panic!("promtool check rules:\n{problems}");
    }
    let unit_tests = root.join("tests/fixtures/prometheus/alerts_test.yaml");
    if let Err(problems) = testbin::promtool::test_rules(&unit_tests) {
        panic!("promtool test rules:\n{problems}");
    }
}

#[test]
fn a_wrong_value_fails_with_the_schema_saying_why() {
    let plane = control_plane();
    for (set, says) in [
        ("gateway.replicas=-1", "/gateway/replicas"),
        ("cache.mode=disk", "/cache/mode"),
        ("gateway.service.exposeAdmin=maybe", "exposeAdmin"),
        ("nosuchvalue=1", "nosuchvalue"),
    ] {
        let output = plane
            .helm()
            .args(["template", "modelgate", CHART, "--set", set])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(says),
            "{set}: {stderr}"
        );
    }
}

#[test]
fn the_default_render_matches_its_golden_file() {
    let plane = control_plane();
    let rendered = render(plane, "modelgate", &[]);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s/golden/chart-default.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &rendered).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        rendered == want,
        "the rendered chart differs from {} (UPDATE_GOLDEN=1 or `make golden` rewrites it)",
        golden.display()
    );
}

#[test]
fn pods_are_hardened_and_limited() {
    let plane = control_plane();
    let objects = objects(&render(plane, "modelgate", &[]));
    let deployments: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 2);
    for deployment in deployments {
        let name = &deployment["metadata"]["name"];
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for container in pod["containers"].as_array().unwrap() {
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(
                security["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
            for bound in ["requests", "limits"] {
                assert!(
                    container["resources"][bound].is_object(),
                    "{name} has no {bound}"
                );
            }
            assert!(container["readinessProbe"].is_object(), "{name}");
        }
        for label in [
            "name",
            "instance",
            "version",
            "component",
            "part-of",
            "managed-by",
        ] {
            assert!(
                deployment["metadata"]["labels"][format!("app.kubernetes.io/{label}")].is_string(),
                "{name} lacks app.kubernetes.io/{label}"
            );
        }
    }
    let gateway = object(&objects, "Deployment", "modelgate-gateway");
    let grace = gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let args = gateway["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--drain-seconds=30") && grace > 30,
        "{grace} {args}"
    );
    let service = object(&objects, "Service", "modelgate-gateway");
    let ports: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["http"], "the admin port is not exposed by default");
}

/// Every value of `values.yaml` (each leaf, by its dotted path) is named in the README's values
/// reference, so a new value cannot ship undocumented.
#[test]
fn the_readme_names_every_value() {
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap())
            .unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let reference = readme
        .split_once("### Values\n")
        .and_then(|(_, rest)| rest.split_once("\n## "))
        .expect("README.md has a ### Values section")
        .0;
    let mut missing = Vec::new();
    let mut stack = vec![(String::new(), &values)];
    while let Some((path, value)) = stack.pop() {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    stack.push((child_path, child));
                }
            }
            _ => {
                if !reference.contains(&format!("`{path}`")) {
                    missing.push(path);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the README's values reference lacks {missing:?}"
    );
}
