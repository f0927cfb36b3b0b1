//! Shared test plumbing: a gateway on a temp config file, a fake provider, an HTTP client, and
//! a condition wait (no fixed sleeps).

use std::{future::Future, path::PathBuf, time::Duration};

use bytes::Bytes;
use fake_provider::FakeProvider;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use modelgate_dataplane::{CacheBackend, Gateway, GatewayOptions, decision::DecisionTarget};
use serde_json::Value;

pub const KEY: &str = "sk-mg-e2e-test-key-0001";

/// A gateway serving a config file in its own temp dir.
pub struct TestGateway {
    pub gateway: Gateway,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub decision_log: PathBuf,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// An answer: status, headers and body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The deployment that served the answer and how many calls the gateway made for it.
    pub fn served_by(&self) -> (&str, &str) {
        (
            self.header("x-modelgate-deployment"),
            self.header("x-modelgate-attempts"),
        )
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The usage the client saw: the body's `usage`, or a stream's usage chunk's.
    pub fn usage(&self) -> Value {
        if !self.header("content-type").starts_with("text/event-stream") {
            return self.json()["usage"].clone();
        }
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .find(|chunk| chunk["usage"].is_object())
            .map(|chunk| chunk["usage"].clone())
            .expect("a usage chunk")
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

impl TestGateway {
    /// Starts a gateway on `config` (YAML manifests).
    pub async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        Self::start_at(dir, config_path).await
    }

    /// Starts a gateway on an existing file in `dir`, with the response cache off: these tests
    /// watch each request reach (or not reach) the upstream. `cache.rs` turns it on.
    pub async fn start_at(dir: tempfile::TempDir, config_path: PathBuf) -> Self {
        Self::start_with_cache(dir, config_path, CacheBackend::Off).await
    }

    /// Starts a gateway on `config` with the given cache backend.
    pub async fn start_cached(config: &str, cache: CacheBackend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        Self::start_with_cache(dir, config_path, cache).await
    }

    async fn start_with_cache(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        cache: CacheBackend,
    ) -> Self {
        Self::start_options(dir, config_path, |options| options.cache = cache).await
    }

    /// Starts a gateway on `config`, with `adjust` applied to the test defaults (cache off).
    pub async fn start_custom(config: &str, adjust: impl FnOnce(&mut GatewayOptions)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        Self::start_options(dir, config_path, |options| {
            options.cache = CacheBackend::Off;
            adjust(options);
        })
        .await
    }

    async fn start_options(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        adjust: impl FnOnce(&mut GatewayOptions),
    ) -> Self {
        let decision_log = dir.path().join("decisions.jsonl");
        // No poll (`local`'s default): every reload test proves the change events alone.
        let mut options = GatewayOptions {
            decision_log: Some(DecisionTarget::File(decision_log.clone())),
            max_body_bytes: 1024 * 1024,
            ..GatewayOptions::local(config_path.clone())
        };
        adjust(&mut options);
        let gateway = Gateway::start(options).await.unwrap();
        Self {
            gateway,
            dir,
            config_path,
            decision_log,
            client: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.api_addr())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.admin_addr())
    }

    pub async fn send(
        &self,
        method: Method,
        url: String,
        key: Option<&str>,
        body: Bytes,
    ) -> Answer {
        self.send_with(method, url, key, &[], body).await
    }

    pub async fn send_with(
        &self,
        method: Method,
        url: String,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// POST a chat request with extra request headers.
    pub async fn post_with(&self, key: &str, headers: &[(&str, &str)], body: Value) -> Answer {
        let url = self.url("/v1/chat/completions");
        self.send_with(
            Method::POST,
            url,
            Some(key),
            headers,
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// POST raw bytes to the chat endpoint with the test key.
    pub async fn post_bytes(&self, body: impl Into<Bytes>) -> Answer {
        let url = self.url("/v1/chat/completions");
        self.send(Method::POST, url, Some(KEY), body.into()).await
    }

    /// POST a JSON body with the test key.
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.post_as(path, Some(KEY), body).await
    }

    pub async fn post_as(&self, path: &str, key: Option<&str>, body: Value) -> Answer {
        self.send(
            Method::POST,
            self.url(path),
            key,
            Bytes::from(body.to_string()),
        )
        .await
    }

    pub async fn get(&self, url: String, key: Option<&str>) -> Answer {
        self.send(Method::GET, url, key, Bytes::new()).await
    }

    /// Replaces the config file atomically (write, then rename over it).
    pub fn write_config(&self, config: &str) {
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// Waits until the gateway serves the config whose checksum `config` compiles to.
    pub async fn wait_for_config(&self, config: &str) {
        let want = checksum_of(config);
        eventually("the new config to be served", || async {
            self.gateway.config().checksum().as_deref() == Some(want.as_str())
        })
        .await;
    }

    /// The decision records written so far (complete lines only).
    pub fn decisions(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.decision_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the decision record of `request_id`.
    pub async fn decision(&self, request_id: &str) -> Value {
        let mut found = None;
        eventually("the decision record", || {
            found = self
                .decisions()
                .into_iter()
                .find(|d| d["request_id"] == request_id);
            std::future::ready(found.is_some())
        })
        .await;
        found.unwrap()
    }
}

/// The checksum the gateway will report for a YAML config.
pub fn checksum_of(config: &str) -> String {
    let (compiled, _) =
        modelgate_crds::load_config(config.as_bytes(), &|_| None, jiff::Timestamp::now()).unwrap();
    compiled.checksum
}

/// Polls `condition` until it holds; fails after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The namespace `default` as org `acme`, and the Secret `keys`, labelled for both uses, whose
/// credentials may go to the fakes on loopback.
pub const TENANCY: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels: {modelgate.io/org: acme}
---
"#;

/// Labels and annotations of a Secret holding both credentials and keys for the tests.
pub const TEST_SECRET_META: &str = r#"labels: {modelgate.io/credential: "true", modelgate.io/virtual-key: "true"}, annotations: {modelgate.io/allowed-hosts: "127.0.0.1, localhost"}"#;

/// A config with the test key (org `acme`) and the given ModelGroups (YAML documents, `---`
/// separated).
pub fn config_with(groups: &str) -> String {
    format!(
        r#"{TENANCY}apiVersion: v1
kind: Secret
metadata: {{name: keys, {TEST_SECRET_META}}}
stringData:
  test: {KEY}
  upstream: sk-upstream-canary-0001
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: e2e}}
spec:
  org: acme
  keySecretRef: {{name: keys, key: test}}
---
{groups}"#
    )
}

/// One ModelGroup document.
pub fn group(name: &str, models: &[&str], deployments: &[String], fallbacks: &[&str]) -> String {
    let models = models.join(", ");
    let fallbacks = if fallbacks.is_empty() {
        String::new()
    } else {
        format!("  fallbacks: [{}]\n", fallbacks.join(", "))
    };
    format!(
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {{name: {name}}}\nspec:\n  models: [{models}]\n{fallbacks}  deployments:\n{}\n---\n",
        deployments.concat()
    )
}

/// An openai-compatible deployment pointing at `base_url`, with the upstream credential.
pub fn upstream(name: &str, base_url: &str, weight: u32) -> String {
    format!(
        "    - name: {name}\n      provider: openai-compatible\n      model: upstream-{name}\n      baseUrl: {base_url}\n      weight: {weight}\n      credentials: {{secretKeyRef: {{name: keys, key: upstream}}}}\n"
    )
}

/// A mock deployment.
pub fn mock(name: &str) -> String {
    format!("    - name: {name}\n      provider: mock\n      model: mock-{name}\n")
}

/// A base URL nobody listens on: its port stays bound (never listening, so connections are
/// refused) for as long as the value lives, so nothing else can take it meanwhile.
pub struct DeadUrl {
    _held: tokio::net::TcpSocket,
    pub url: String,
}

pub fn dead_url() -> DeadUrl {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    DeadUrl {
        _held: socket,
        url: format!("http://127.0.0.1:{port}/v1"),
    }
}

pub fn chat(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// A config with the group `chat` on the fake and a mock-backed group serving `mock_model`.
pub fn chat_and_mock(fake: &FakeProvider, mock_model: &str) -> String {
    config_with(&format!(
        "{}{}",
        group(
            "chat",
            &["chat"],
            &[upstream("a", &fake.base_url(), 1)],
            &[]
        ),
        group("other", &[mock_model], &[mock("m")], &[])
    ))
}

/// An openai-compatible deployment with extra fields (lines indented by six spaces).
pub fn upstream_with(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "    - name: {name}\n      provider: openai-compatible\n      model: upstream-{name}\n      baseUrl: {base_url}\n{extra}"
    )
}

/// A mock deployment with extra fields (lines indented by six spaces).
pub fn mock_with(name: &str, extra: &str) -> String {
    format!("{}{extra}", mock(name))
}

/// One RoutingPolicy document.
pub fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: modelgate.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}\n---\n"
    )
}

/// A VirtualKey of the namespace's org with its own Secret; `extra` holds spec lines indented
/// by two spaces (a `team:` must be declared by a RoutingPolicy).
pub fn virtual_key(name: &str, material: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-key, labels: {{modelgate.io/virtual-key: \"true\"}}}}\nstringData: {{key: {material}}}\n---\napiVersion: modelgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {{name: {name}}}\nspec:\n  keySecretRef: {{name: {name}-key, key: key}}\n{extra}---\n"
    )
}

/// The `x-modelgate-deployment` of each answer.
pub fn deployments_of(answers: &[Answer]) -> Vec<String> {
    answers
        .iter()
        .map(|a| a.header("x-modelgate-deployment").to_owned())
        .collect()
}

/// The ModelGroup `chat` with one deployment on `fake` at `price` USD per 1M tokens in and out,
/// its credential from the Secret `keys` (key `upstream`).
pub fn priced_chat_group(fake: &FakeProvider, price: f64) -> String {
    format!(
        "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {{name: chat}}\nspec:\n  models: [chat]\n  deployments:\n    - name: fake\n      provider: openai-compatible\n      model: upstream-fake\n      baseUrl: {}\n      credentials: {{secretKeyRef: {{name: keys, key: upstream}}}}\n      pricing: {{input: {price}, output: {price}}}\n---\n",
        fake.base_url()
    )
}

/// Runs `scenario` until one run fits inside one UTC minute (the window rate limits count in)
/// and returns what that run observed. A run that crossed a minute boundary saw two windows and
/// proves nothing, so it is run again (in the new minute, on fresh counters); no wall-clock
/// waiting.
pub async fn in_one_minute<F, Fut, T>(mut scenario: F) -> T
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = T>,
{
    let minute = || jiff::Timestamp::now().as_second().div_euclid(60);
    for run in 0..3 {
        let started = minute();
        let observed = scenario(run).await;
        if minute() == started {
            return observed;
        }
    }
    panic!("three runs in a row crossed a minute boundary")
}
