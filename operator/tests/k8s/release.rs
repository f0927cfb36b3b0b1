//! The chart as installed, and its pods run as processes: the README's "Install on Kubernetes"
//! blocks run as written, the installed manifest read back with `helm get manifest`, and the
//! operator and gateway containers started with their rendered args and env and a token of their
//! ServiceAccount, as a kubelet would start them (minus the container).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use testbin::{ControlPlane, http_get, wait_until};

use crate::{
    chart::objects,
    support::{Operator, SETTLE, helm},
};

pub const RELEASE_NAMESPACE: &str = "modelgate";
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The shell block of the README that follows `<!-- tested: NAME -->`.
pub fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let marker = format!("<!-- tested: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let body = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no ```sh block after {marker}"))
        .0;
    body.to_owned()
}

/// Runs `script` with bash from the repository root, with the control plane's kubectl and helm
/// first on the PATH and its admin kubeconfig; stdout on success, a panic with both streams
/// otherwise.
pub fn run_script(plane: &ControlPlane, script: &str) -> String {
    let path = format!(
        "{}:{}",
        plane.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut bash = Command::new("bash");
    bash.args(["-euo", "pipefail", "-c", script])
        .current_dir(REPO)
        .env("PATH", path);
    // helm's own homes, as the plane sets them, and its kubeconfig.
    for (key, value) in plane.helm().get_envs() {
        if let Some(value) = value {
            bash.env(key, value);
        }
    }
    let output = bash.stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script}\nfailed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The README's install block: both charts into the release namespace.
pub fn install_from_readme(plane: &ControlPlane) {
    run_script(plane, &readme_block("install"));
}

/// The objects of the installed release.
pub fn installed_objects(plane: &ControlPlane) -> Vec<Value> {
    objects(&helm(
        plane,
        &["get", "manifest", "modelgate", "-n", RELEASE_NAMESPACE],
    ))
}

/// A container of an installed Deployment as a process would get it: its command line (with
/// `replace` applied to each argument) and its env, field references resolved for `pod`.
pub struct ContainerRun {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub service_account: String,
}

pub fn container_run(
    objects: &[Value],
    deployment: &str,
    pod: &str,
    replace: impl Fn(&str) -> String,
) -> ContainerRun {
    let deployment = crate::chart::object(objects, "Deployment", deployment);
    let spec = &deployment["spec"]["template"]["spec"];
    ContainerRun::of(
        &spec["containers"][0],
        RELEASE_NAMESPACE,
        pod,
        spec["serviceAccountName"].as_str().unwrap(),
        replace,
    )
}

impl ContainerRun {
    /// A container spec (JSON) of a pod `pod` in `namespace` run by `service_account`: its args
    /// with `replace` applied to each, and its env with field references resolved.
    pub fn of(
        container: &Value,
        namespace: &str,
        pod: &str,
        service_account: &str,
        replace: impl Fn(&str) -> String,
    ) -> Self {
        let args = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| replace(a.as_str().unwrap()))
            .collect();
        let env = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|var| {
                let name = var["name"].as_str().unwrap().to_owned();
                let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.namespace") => namespace.to_owned(),
                    Some("metadata.name") => pod.to_owned(),
                    Some(other) => panic!("unexpected field reference {other}"),
                    None => var["value"].as_str().unwrap().to_owned(),
                };
                (name, value)
            })
            .collect();
        Self {
            args,
            env,
            service_account: service_account.to_owned(),
        }
    }
}

/// The operator as the chart's pod runs it: its args (admin and webhook ports on loopback) and
/// env, and a token of its ServiceAccount.
pub async fn start_operator_pod(plane: &ControlPlane, objects: &[Value]) -> Operator {
    let run = container_run(
        objects,
        "modelgate-operator",
        "modelgate-operator-0",
        |arg| {
            let (flag, _) = arg.split_once('=').unwrap_or((arg, ""));
            match flag {
                "--admin-listen" | "--webhook-listen" => format!("{flag}=127.0.0.1:0"),
                _ => arg.to_owned(),
            }
        },
    );
    let kubeconfig = plane.kubeconfig_for_service_account(RELEASE_NAMESPACE, &run.service_account);
    Operator::start_with(&kubeconfig, &run.args, &run.env).await
}

/// A gateway pod's data plane process.
pub struct DataPlane {
    pub pod: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub api: SocketAddr,
    pub admin: SocketAddr,
}

impl DataPlane {
    /// Starts `modelgate-dataplane` with the gateway container's args and env: listeners on
    /// loopback port 0, the credentials mount at a directory of its own (written as the kubelet
    /// projects the Secret, by [`DataPlane::project_credentials`]), and `extra` flags last.
    pub async fn start(plane: &ControlPlane, objects: &[Value], pod: &str, extra: &[&str]) -> Self {
        Self::start_container(plane, pod, RELEASE_NAMESPACE, extra, |credentials| {
            container_run(objects, "modelgate-gateway", pod, |arg| {
                let (flag, _) = arg.split_once('=').unwrap_or((arg, ""));
                match flag {
                    "--listen" | "--admin-listen" => format!("{flag}=127.0.0.1:0"),
                    "--credentials-dir" => format!("{flag}={}", credentials.display()),
                    _ => arg.to_owned(),
                }
            })
        })
        .await
    }

    /// Starts `modelgate-dataplane` as `run` says (given the directory standing for its
    /// credentials mount), with a token of its ServiceAccount in `namespace`, `extra` flags last.
    pub async fn start_container(
        plane: &ControlPlane,
        pod: &str,
        namespace: &str,
        extra: &[&str],
        run: impl FnOnce(&Path) -> ContainerRun,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        std::fs::create_dir(&credentials).unwrap();
        let run = run(&credentials);
        let kubeconfig = plane.kubeconfig_for_service_account(namespace, &run.service_account);
        let stdout = dir.path().join("stdout");
        let child = Command::new(dataplane_binary())
            .args(&run.args)
            .args(extra)
            .envs(run.env)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut data_plane = Self {
            pod: pod.to_owned(),
            child: Some(child),
            dir,
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let listening = |which: &str| {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            let prefix = format!("modelgate-dataplane {which} listening on http://");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.parse::<SocketAddr>().ok())
        };
        assert!(
            wait_until(SETTLE, || {
                let up = listening("admin").is_some();
                async move { up }
            })
            .await,
            "data plane {pod} did not start:\n{}",
            data_plane.logs()
        );
        let loopback = |addr: SocketAddr| SocketAddr::from(([127, 0, 0, 1], addr.port()));
        data_plane.api = loopback(listening("api").unwrap());
        data_plane.admin = loopback(listening("admin").unwrap());
        data_plane
    }

    /// What it wrote on stdout (the decision log, with `--decision-log=-`).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// The checksum it serves and whether it reaches the API server, from `/readyz`.
    pub async fn readyz(&self) -> Option<Value> {
        let (_, body) = http_get(self.admin, "/readyz").await?;
        serde_json::from_str(&body).ok()
    }

    pub async fn serves(&self) -> Option<String> {
        Some(self.readyz().await?["checksum"].as_str()?.to_owned())
    }

    /// The sum of every sample of `name` on its `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics").await.unwrap_or_default();
        crate::support::sum_samples(&body, name)
    }

    /// Writes `credentials.json` into its credentials mount, the kubelet's way (a new file
    /// renamed over the old).
    pub fn project_credentials(&self, json: &[u8]) {
        let mount = self.dir.path().join("credentials");
        let staged = mount.join(".credentials.json.tmp");
        std::fs::write(&staged, json).unwrap();
        std::fs::rename(staged, mount.join("credentials.json")).unwrap();
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A chat completion of `model` with `key` at the data plane API `addr`: status and body.
pub async fn chat(addr: SocketAddr, key: &str, model: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let request = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `modelgate-dataplane`, built beside this package's binary by `cargo test --workspace` (the
/// data plane's own integration tests need it).
pub fn dataplane_binary() -> PathBuf {
    let path =
        Path::new(env!("CARGO_BIN_EXE_modelgate-operator")).with_file_name("modelgate-dataplane");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p modelgate-dataplane` (or `make test`) first",
        path.display()
    );
    path
}
