//! Real parts for tests. [`redis::RedisServer`] is a real Redis, [`promtool`] Prometheus' own
//! checker of an exposition and of rule files, [`monitoring`] the shipped dashboard's and alerts'
//! PromQL compared with a scrape, [`otelcol::Collector`] an OpenTelemetry Collector. The rest of this
//! crate is a real control plane: kube-apiserver backed by etcd, built from their Go modules by
//! `build-testbin.sh` (cached outside the clone), started once per test binary on loopback with
//! the modelgate CRDs installed. Each test takes its own namespace. See
//! `../shared/reference/testbin.md` for the recipe this follows.
//!
//! Test-only code: it panics with the control plane's logs when something cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod certs;
pub mod exposition;
pub mod monitoring;
pub mod otelcol;
mod process;
pub mod promtool;
pub mod redis;

use std::{
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

use certs::Authority;
pub use certs::Pair;
use process::Supervised;

/// How long the control plane may take to come up on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A kube-apiserver with its etcd: the one every test in a binary shares, or one a test owns.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    server: String,
    /// etcd's client URL, for an API server started again.
    etcd_url: String,
    authority: Authority,
    admin_kubeconfig: PathBuf,
    // Held so the supervisors keep their lifelines until the plane (or the process) goes; the
    // API server first.
    children: Mutex<Vec<Supervised>>,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();
static NAMESPACE_SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// The shared control plane, started on first use. Each `#[tokio::test]` has its own runtime, so
/// this hands out paths and makes clients per test rather than sharing a `Client`.
pub fn shared() -> &'static ControlPlane {
    SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(ControlPlane::start())
        })
        .join()
        .expect("control plane start panicked")
    })
}

impl ControlPlane {
    async fn start() -> Self {
        Self::start_with(true).await
    }

    /// A control plane of the calling test's own, stopped when dropped: for a test that stops
    /// the API server, or installs the CRDs itself (with `crds` false).
    pub async fn start_private(crds: bool) -> Self {
        Self::start_with(crds).await
    }

    async fn start_with(crds: bool) -> Self {
        let bin = built_by("build-testbin.sh");
        let dir = tempfile::Builder::new()
            .prefix("modelgate-k8s-")
            .tempdir()
            .expect("scratch dir")
            .keep();
        let authority = Authority::new().expect("CA");
        certs::write_server_files(&authority, &dir).expect("write certs");
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Self::start_processes(&bin, &dir).await {
                Ok((server, etcd_url, children)) => {
                    let mut plane = Self {
                        admin_kubeconfig: PathBuf::new(),
                        dir,
                        bin,
                        server,
                        etcd_url,
                        authority,
                        children: Mutex::new(children),
                    };
                    plane.admin_kubeconfig = plane.kubeconfig_for("admin", &["system:masters"]);
                    if crds {
                        plane.install_crds().await;
                    }
                    return plane;
                }
                // A lost race for a port picked by binding port 0: try again with new ports.
                Err(error) => last_error = error,
            }
        }
        panic!("control plane did not start: {last_error}");
    }

    async fn start_processes(
        bin: &Path,
        dir: &Path,
    ) -> Result<(String, String, Vec<Supervised>), String> {
        let (etcd_client, etcd_peer, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let etcd_data = dir.join(format!("etcd-{etcd_client}"));
        let etcd_args = [
            "--data-dir",
            &etcd_data.display().to_string(),
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{etcd_peer}"),
            "--unsafe-no-fsync=true",
        ]
        .map(String::from);
        let etcd_log = dir.join("etcd.log");
        let mut etcd = Supervised::spawn(&bin.join("etcd"), &etcd_args, &etcd_log, Some(dir))
            .map_err(|e| format!("spawn etcd: {e}"))?;
        let etcd_up = wait_until(START_TIMEOUT, || {
            let exited = etcd.has_exited();
            async move { exited || etcd_healthy(etcd_client).await }
        })
        .await;
        if !etcd_up || etcd.has_exited() {
            return Err(format!("etcd did not become healthy:\n{}", tail(&etcd_log)));
        }

        let server = format!("https://127.0.0.1:{api_port}");
        let apiserver = match Self::start_apiserver(bin, dir, &etcd_url, &server).await {
            Ok(apiserver) => apiserver,
            Err(error) => {
                drop(etcd);
                return Err(error);
            }
        };
        Ok((server, etcd_url, vec![apiserver, etcd]))
    }

    async fn start_apiserver(
        bin: &Path,
        dir: &Path,
        etcd_url: &str,
        server: &str,
    ) -> Result<Supervised, String> {
        let api_port = server.rsplit(':').next().unwrap_or_default();
        let certs = dir.display().to_string();
        let api_args = [
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={certs}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--authorization-mode=RBAC".into(),
            format!("--client-ca-file={certs}/ca.crt"),
            format!("--service-account-issuer={server}/"),
            format!("--service-account-key-file={certs}/sa.pub"),
            format!("--service-account-signing-key-file={certs}/sa.key"),
            "--disable-admission-plugins=ServiceAccount".into(),
        ];
        let api_log = dir.join("kube-apiserver.log");
        let mut apiserver =
            Supervised::spawn(&bin.join("kube-apiserver"), &api_args, &api_log, None)
                .map_err(|e| format!("spawn kube-apiserver: {e}"))?;
        let ca = std::fs::read_to_string(dir.join("ca.crt")).map_err(|e| e.to_string())?;
        let probe = probe_client(server, &ca).await;
        let api_up = wait_until(START_TIMEOUT, || {
            let exited = apiserver.has_exited();
            let probe = &probe;
            async move { exited || api_ready(probe).await }
        })
        .await;
        if !api_up || apiserver.has_exited() {
            return Err(format!(
                "kube-apiserver did not become ready:\n{}",
                tail(&api_log)
            ));
        }
        Ok(apiserver)
    }

    /// Stops the API server (etcd keeps its data) until [`ControlPlane::start_apiserver_again`].
    pub fn stop_apiserver(&self) {
        let mut children = self.children.lock().unwrap();
        // The supervisor's drop stops the child and waits for it.
        drop(children.remove(0));
    }

    /// Starts the API server again on the same address, after [`ControlPlane::stop_apiserver`].
    pub async fn start_apiserver_again(&self) {
        let apiserver = Self::start_apiserver(&self.bin, &self.dir, &self.etcd_url, &self.server)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.children.lock().unwrap().insert(0, apiserver);
    }

    async fn install_crds(&self) {
        let client = self.client().await;
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let params = PatchParams::apply("modelgate-tests").force();
        for (_, crd) in modelgate_crds::crds() {
            let name = crd.metadata.name.clone().expect("CRD name");
            api.patch(&name, &params, &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
            tokio::time::timeout(
                START_TIMEOUT,
                await_condition(api.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not established"))
            .expect("watch CRD");
        }
    }

    /// The directory holding kube-apiserver, kubectl, etcd and helm.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The API server URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The cluster-admin kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A kubeconfig for `user` in `groups`, authenticated by a client certificate from the
    /// cluster CA; what an RBAC test hands to the process under test.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        let pair = self.authority.client(user, groups).expect("client cert");
        let path = self.dir.join(format!("kubeconfig-{user}"));
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server,
                "certificate-authority-data": BASE64.encode(self.authority.cert_pem()),
            }}],
            "users": [{"name": user, "user": {
                "client-certificate-data": BASE64.encode(pair.cert),
                "client-key-data": BASE64.encode(pair.key),
            }}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        });
        std::fs::write(&path, kubeconfig.to_string()).expect("write kubeconfig");
        path
    }

    /// A kubeconfig that authenticates as the ServiceAccount `name` of `namespace`, with a token
    /// from the TokenRequest API (what a pod of that ServiceAccount holds).
    pub fn kubeconfig_for_service_account(&self, namespace: &str, name: &str) -> PathBuf {
        let output = self
            .kubectl()
            .args(["create", "token", name, "-n", namespace, "--duration=2h"])
            .output()
            .expect("kubectl create token");
        assert!(
            output.status.success(),
            "kubectl create token {namespace}/{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let path = self.dir.join(format!("kubeconfig-sa-{namespace}-{name}"));
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server,
                "certificate-authority-data": BASE64.encode(self.authority.cert_pem()),
            }}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": name, "namespace": namespace}}],
            "current-context": "test",
        });
        std::fs::write(&path, kubeconfig.to_string()).expect("write kubeconfig");
        path
    }

    /// `helm` as cluster admin.
    pub fn helm(&self) -> Command {
        let mut command = Command::new(self.bin.join("helm"));
        command
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm-cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm-config"))
            .env("HELM_DATA_HOME", self.dir.join("helm-data"));
        command
    }

    /// A cluster-admin client, for this test's runtime.
    pub async fn client(&self) -> Client {
        client_from(&self.admin_kubeconfig).await
    }

    /// `kubectl` as cluster admin.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin.join("kubectl"));
        command.env("KUBECONFIG", &self.admin_kubeconfig);
        command
    }

    /// A fresh namespace for one test.
    pub async fn namespace(&self, prefix: &str) -> String {
        let sequence = NAMESPACE_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{sequence}-{:04x}", fastrand_u16());
        let api: Api<Namespace> = Api::all(self.client().await);
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .expect("namespace");
        api.create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// The last lines of a control-plane log, for failure messages.
    pub fn log_tail(&self, process: &str) -> String {
        tail(&self.dir.join(format!("{process}.log")))
    }
}

/// Runs `command` with `input` on its stdin; its whole output.
pub fn run_with_stdin(mut command: Command, input: &[u8]) -> std::process::Output {
    use std::{io::Write, process::Stdio};
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Written from a thread: a child that answers before reading all of its input would
    // otherwise block on a full stdout pipe while we block on its full stdin.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("wait");
    let _ = writer.join();
    output
}

/// A client for the user in `kubeconfig`.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held. The way tests
/// wait for state, never a fixed sleep.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one of this crate's build scripts (which build what is missing, cached outside the
/// clone) and returns the path it prints last.
pub(crate) fn built_by(script: &str) -> PathBuf {
    let output = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(output.status.success(), "{script} failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{script} prints a path"));
    PathBuf::from(path.trim())
}

/// A loopback port free a moment ago, for a process the test starts (which retries a lost race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind port 0")
        .port()
}

fn fastrand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    (nanos ^ std::process::id()) as u16
}

async fn etcd_healthy(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    matches!(http_get(addr, "/health").await, Some((200, _)))
}

/// A plain HTTP/1.0 GET on loopback: status and body, or `None` when nothing answers. Enough for
/// health and metrics endpoints without another HTTP client in the harness.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// An unauthenticated client trusting the cluster CA: `/readyz` is readable anonymously.
async fn probe_client(server: &str, ca: &str) -> Client {
    let kubeconfig: Kubeconfig = serde_json::from_value(serde_json::json!({
        "clusters": [{"name": "test", "cluster": {
            "server": server,
            "certificate-authority-data": BASE64.encode(ca),
        }}],
        "users": [{"name": "anonymous", "user": {}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "anonymous"}}],
        "current-context": "test",
    }))
    .expect("probe kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await;
    Client::try_from(config.expect("probe config")).expect("probe client")
}

async fn api_ready(client: &Client) -> bool {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("request");
    matches!(client.request_text(request).await, Ok(text) if text.trim() == "ok")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
