//! Plumbing shared by the operator tests: an operator process, kubectl, and waits on conditions.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;
use testbin::{ControlPlane, http_get, wait_until};

pub use testbin::shared as control_plane;

/// A namespace's worth of objects: a valid group `chat`, a group `broken` whose fallback does not
/// exist, and a VirtualKey `team` whose key the operator generates.
pub const MIXED_OBJECTS: &str = r#"
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: chat}
spec:
  models: [chat]
  deployments: [{name: mock, provider: mock, model: mock-1}]
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: broken}
spec:
  models: [broken]
  deployments: [{name: mock, provider: mock, model: mock-1}]
  fallbacks: [missing]
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {name: team}
spec: {}
"#;

/// How long a reconcile-driven state may take to appear on a busy 2-core machine.
pub const SETTLE: Duration = Duration::from_secs(60);

/// A running `modelgate-operator` process with its log captured.
pub struct Operator {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub admin: SocketAddr,
}

pub struct OperatorOptions<'a> {
    pub kubeconfig: &'a Path,
    /// The namespace it reconciles (unless `cluster_wide`) and holds its Lease in.
    pub namespace: &'a str,
    /// Reconcile every namespace instead of `namespace` alone.
    pub cluster_wide: bool,
    pub lease_name: &'a str,
    pub identity: &'a str,
    /// More flags for this operator.
    pub extra: &'a [&'a str],
}

impl<'a> OperatorOptions<'a> {
    /// An operator scoped to `namespace`, holding its Lease there, as cluster admin.
    pub fn new(plane: &'a ControlPlane, namespace: &'a str) -> Self {
        Self {
            kubeconfig: plane.admin_kubeconfig(),
            namespace,
            cluster_wide: false,
            lease_name: "modelgate-operator",
            identity: "operator-a",
            extra: &[],
        }
    }
}

impl Operator {
    /// Starts the operator and waits until its caches are synced (`/readyz`).
    pub async fn start(options: OperatorOptions<'_>) -> Self {
        let scope: &[&str] = if options.cluster_wide {
            &[]
        } else {
            &["--namespace", options.namespace]
        };
        let mut args: Vec<String> = scope.iter().map(|s| s.to_string()).collect();
        args.extend(
            [
                "--lease-namespace",
                options.namespace,
                "--lease-name",
                options.lease_name,
                "--identity",
                options.identity,
                "--admin-listen",
                "127.0.0.1:0",
                "--lease-duration",
                "3s",
                "--renew-interval",
                "500ms",
                "--debounce",
                "50ms",
            ]
            .map(str::to_owned),
        );
        args.extend(options.extra.iter().map(|s| s.to_string()));
        Self::start_with(options.kubeconfig, &args, &[]).await
    }

    /// Starts the operator with exactly `args` and `env` (besides `KUBECONFIG`; `RUST_LOG` unless
    /// `env` sets it),
    /// and waits until its caches are synced (`/readyz`). `args` must bind the admin port on
    /// loopback port 0.
    pub async fn start_with(kubeconfig: &Path, args: &[String], env: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operator.log");
        let child = Command::new(env!("CARGO_BIN_EXE_modelgate-operator"))
            .args(args)
            .env("RUST_LOG", "info,modelgate_operator=debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut operator = Self {
            child: Some(child),
            log,
            _dir: dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        assert!(
            wait_until(SETTLE, || {
                let addr = operator.admin_addr_from_log();
                async move { addr.is_some() }
            })
            .await,
            "operator did not start:\n{}",
            operator.logs()
        );
        operator.admin = operator.admin_addr_from_log().unwrap();
        let admin = operator.admin;
        assert!(
            wait_until(SETTLE, || async move {
                matches!(http_get(admin, "/readyz").await, Some((200, _)))
            })
            .await,
            "operator never became ready:\n{}",
            operator.logs()
        );
        operator
    }

    fn admin_addr_from_log(&self) -> Option<SocketAddr> {
        self.log_lines()
            .iter()
            .find_map(|line| line["fields"]["admin_addr"].as_str()?.parse().ok())
    }

    /// The operator's log, as written so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The sum of every sample of `name` (all label sets) on `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        sum_samples(&self.exposition().await, name)
    }

    /// What `/metrics` serves now.
    pub async fn exposition(&self) -> String {
        let (_, body) = http_get(self.admin, "/metrics").await.unwrap_or_default();
        body
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    /// SIGKILL: a crash, leaving the Lease held.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The sum of every sample of `name` (all label sets) in a Prometheus text exposition.
pub fn sum_samples(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `kubectl apply -n namespace -f -` with `yaml` on stdin; panics with kubectl's output on failure.
pub fn kubectl_apply(plane: &ControlPlane, namespace: &str, yaml: &str) {
    let mut apply = plane.kubectl();
    apply.args(["apply", "-n", namespace, "-f", "-"]);
    let output = testbin::run_with_stdin(apply, yaml.as_bytes());
    assert!(
        output.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs kubectl with `args`; returns (success, stdout, stderr).
pub fn kubectl(plane: &ControlPlane, args: &[&str]) -> (bool, String, String) {
    let output = plane.kubectl().args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs helm with `args`: its stdout, or a panic with what helm said.
pub fn helm(plane: &ControlPlane, args: &[&str]) -> String {
    let output = plane.helm().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The object as JSON, or `None` if it does not exist.
pub async fn get_json<K>(client: &Client, namespace: &str, name: &str) -> Option<Value>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

/// The condition `type_` of the object's status, as JSON.
pub async fn condition<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Option<Value>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
{
    let object = get_json::<K>(client, namespace, name).await?;
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Waits until the object's condition `type_` has `status` (and `reason`, if given).
pub async fn wait_condition<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> Value
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
{
    let last = std::cell::RefCell::new(None);
    let held = wait_until(SETTLE, || {
        let client = client.clone();
        let last = &last;
        async move {
            let found = condition::<K>(&client, namespace, name, type_).await;
            let ok = found
                .as_ref()
                .is_some_and(|c| c["status"] == status && reason.is_none_or(|r| c["reason"] == r));
            *last.borrow_mut() = found;
            ok
        }
    })
    .await;
    assert!(
        held,
        "{} {namespace}/{name}: condition {type_} never became {status} {reason:?}; last: {:?}",
        K::kind(&()),
        last.borrow()
    );
    last.into_inner().unwrap()
}
