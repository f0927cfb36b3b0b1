//! A fleet on one machine: data-plane replicas as separate processes sharing a real
//! `redis-server` (from `testbin`), each on port 0 and found through the lines it prints.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub use testbin::redis::RedisServer;

use crate::support::eventually;

/// A `modelgate-dataplane` process.
pub struct Replica {
    child: Option<Child>,
    pub api: SocketAddr,
    pub admin: SocketAddr,
}

impl Replica {
    /// Starts a replica on `config` with extra flags (`--state ...`), and waits until it serves.
    /// The response cache is off unless `flags` name one: these tests count upstream calls.
    pub async fn start(config: &Path, flags: &[&str]) -> Self {
        let cache_off: &[&str] = if flags.contains(&"--cache") {
            &[]
        } else {
            &["--cache", "off"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_modelgate-dataplane"))
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(cache_off)
            .args(flags)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (api, admin) = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut address = |listener: &str| -> Option<SocketAddr> {
                let prefix = format!("modelgate-dataplane {listener} listening on http://");
                lines.find_map(|line| line.ok()?.strip_prefix(&prefix)?.parse().ok())
            };
            Some((address("api")?, address("admin")?))
        })
        .await
        .unwrap()
        .expect("the replica never printed its addresses");
        let replica = Self {
            child: Some(child),
            api,
            admin,
        };
        let ready = format!("http://{api}/v1/models");
        eventually("the replica to serve", || {
            let ready = ready.clone();
            async move {
                let client = crate::support::client();
                let request = http::Request::get(ready)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                // 401 without a key: the listener is up and a config is loaded.
                client
                    .request(request)
                    .await
                    .is_ok_and(|r| r.status() == 401)
            }
        })
        .await;
        replica
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// The value of a counter on the replica's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let request = http::Request::get(format!("http://{}/metrics", self.admin))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let Ok(response) = crate::support::client().request(request).await else {
            return 0.0;
        };
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, and wait for the graceful exit (which saves the memory backend's spend).
    pub fn terminate(mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = child.wait().unwrap();
            assert!(exit.success(), "the replica exited with {exit}");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `config` written to `config.yaml` in a fresh directory, for replicas to start on.
pub fn config_file(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

/// Three replicas on `config` sharing a fresh Redis for their state; keep all three values alive
/// for the test.
pub async fn three_replicas(config: &str) -> (RedisServer, tempfile::TempDir, Vec<Replica>) {
    let redis = RedisServer::start().await;
    let (dir, path) = config_file(config);
    let state = redis.url();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&path, &["--state", &state]).await);
    }
    (redis, dir, replicas)
}

/// How long the fleet tests give a background settle to land.
pub const SETTLE: Duration = Duration::from_secs(10);
