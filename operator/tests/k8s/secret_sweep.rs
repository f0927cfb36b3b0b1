//! One sweep for secrets: canaries (a provider API key, a virtual key, a credential Secret value,
//! a password in a URL's userinfo) planted in a namespace, every path driven with logs at TRACE
//! (success, each error class, the fault matrix, a bad key, a reload error, the operator
//! reconciling bad references), then every sink searched: the output of every process, the
//! decision logs, `/metrics` of both binaries, the objects' status and Events, Redis keys and
//! values, and what clients got back (bodies and headers). A canary found raw, hex, base64 or
//! URL-encoded fails the test.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use fake_provider::{FakeProvider, Script};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use modelgate_crds::{ModelGroup, VirtualKey};
use redis::AsyncCommands;
use serde_json::{Value, json};
use testbin::{http_get, redis::RedisServer, wait_until};

use crate::{
    release::dataplane_binary,
    support::{Operator, SETTLE, control_plane, kubectl, kubectl_apply, wait_condition},
};

struct Canaries {
    provider_key: String,
    virtual_key: String,
    aws_secret: String,
    url_password: String,
}

impl Canaries {
    fn new() -> Self {
        let tag = format!("{:08x}", std::process::id() ^ 0x5eed);
        Self {
            provider_key: format!("sk-provider-canary-{tag}-0001"),
            virtual_key: format!("sk-mg-virtual-canary-{tag}-0002"),
            aws_secret: format!("aws-secret-canary-{tag}-0003"),
            url_password: format!("userinfo-canary-{tag}-0004"),
        }
    }

    fn all(&self) -> [&str; 4] {
        [
            &self.provider_key,
            &self.virtual_key,
            &self.aws_secret,
            &self.url_password,
        ]
    }
}

/// Every spelling of `secret` a leak could take.
fn spellings(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        secret.to_owned(),
        hex::encode(bytes),
        hex::encode_upper(bytes),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
    ];
    // URL-encoded: only the characters that change it matter; the canaries are URL-safe, so
    // their percent-encoding of every byte is the form to look for.
    forms.push(bytes.iter().map(|b| format!("%{b:02X}")).collect());
    forms.push(bytes.iter().map(|b| format!("%{b:02x}")).collect());
    // Base64 of a value inside a longer string starts at one of three alignments.
    for skip in 1..3 {
        let shifted = format!("{}{secret}", "x".repeat(skip));
        let encoded = STANDARD_NO_PAD.encode(shifted.as_bytes());
        forms.push(encoded[(skip * 4).div_ceil(3) + 1..].to_owned());
    }
    forms
}

fn assert_clean(sink: &str, text: &str, canaries: &Canaries) {
    for canary in canaries.all() {
        for form in spellings(canary) {
            if form.len() >= 12 && text.contains(&form) {
                let at = text.find(&form).unwrap_or_default();
                let context = &text[at.saturating_sub(120)..(at + form.len() + 40).min(text.len())];
                panic!("{sink} holds a canary ({canary} as {form}):\n...{context}...");
            }
        }
    }
}

struct Process {
    child: Child,
    dir: tempfile::TempDir,
}

impl Process {
    fn output(&self) -> String {
        ["stdout", "stderr"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn listening(&self, which: &str) -> Option<SocketAddr> {
        let prefix = format!("modelgate-dataplane {which} listening on http://");
        std::fs::read_to_string(self.dir.path().join("stdout"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn data_plane(args: &[String], env: &[(&str, String)]) -> (Process, SocketAddr, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(dataplane_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let process = Process { child, dir };
    let up = wait_until(SETTLE, || {
        let up = process.listening("admin").is_some();
        async move { up }
    })
    .await;
    assert!(up, "the data plane did not start:\n{}", process.output());
    let (api, admin) = (
        process.listening("api").unwrap(),
        process.listening("admin").unwrap(),
    );
    (process, api, admin)
}

/// A chat completion call with `key` and `body`: the whole answer (status, headers, body) as text.
async fn chat(api: SocketAddr, key: &str, body: Value) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::post(format!("http://{api}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("x-modelgate-cache", "false")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let Ok(response) = client.request(request).await else {
        return String::new();
    };
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    format!(
        "{} {:?}\n{}\n",
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body)
    )
}

/// Calls the gateway the ways that reach every path; every answer (status, headers, body) as
/// one text for the sweep.
async fn drive(api: SocketAddr, fake: &FakeProvider, key: &str) -> String {
    let mut seen = String::new();
    let scripts = [
        None,
        Some(Script::status(400)),
        Some(Script::status(401)),
        Some(Script::status(429)),
        Some(Script::status(500)),
        Some(Script::status(503)),
        Some(Script::Reset),
        Some(Script::MalformedJson),
        Some(Script::CutStreamAfter { chunks: 1 }),
        Some(Script::StreamErrorAfter { chunks: 1 }),
    ];
    for script in scripts {
        let stream = matches!(
            script,
            Some(Script::CutStreamAfter { .. } | Script::StreamErrorAfter { .. })
        );
        if let Some(script) = script {
            fake.push(script);
        }
        let mut body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
        if stream {
            body["stream"] = json!(true);
        }
        seen.push_str(&chat(api, key, body).await);
    }
    // A wrong key, a near miss of the real one, the userinfo group, an unknown model.
    seen.push_str(
        &chat(
            api,
            &format!("{key}x"),
            json!({"model": "chat", "messages": []}),
        )
        .await,
    );
    seen.push_str(
        &chat(
            api,
            key,
            json!({"model": "userinfo", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
    );
    seen.push_str(&chat(api, key, json!({"model": "nope", "messages": []})).await);
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn no_canary_reaches_any_sink() {
    let plane = control_plane();
    let namespace = plane.namespace("sweep").await;
    let client = plane.client().await;
    let canaries = Canaries::new();
    let fake = FakeProvider::start().await.unwrap();
    let redis = RedisServer::start().await;
    let fake_url = fake.base_url();
    let with_password = fake_url.replace(
        "http://",
        &format!("http://user:{}@", canaries.url_password),
    );
    let objects = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: provider, labels: {{modelgate.io/credential: "true"}}, annotations: {{modelgate.io/allowed-hosts: "127.0.0.1"}}}}
stringData: {{key: {provider}, aws: {aws}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: callers, labels: {{modelgate.io/virtual-key: "true"}}}}
stringData: {{key: {virtual}}}
---
apiVersion: modelgate.io/v1alpha1
kind: RoutingPolicy
metadata: {{name: default}}
spec: {{allowLoopbackUpstreams: true, allowUnpriced: true}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: chat}}
spec:
  models: [chat]
  deployments:
    - {{name: fake, provider: openai-compatible, model: m, baseUrl: "{fake_url}", credentials: {{secretKeyRef: {{name: provider, key: key}}}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: userinfo}}
spec:
  models: [userinfo]
  deployments:
    - {{name: fake, provider: openai-compatible, model: m, baseUrl: "{with_password}", credentials: {{secretKeyRef: {{name: provider, key: key}}}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: bedrock}}
spec:
  models: [bedrock]
  deployments:
    - {{name: aws, provider: bedrock, model: amazon.nova-pro-v1:0, region: us-east-1, credentials: {{aws: {{accessKeyIdRef: {{name: provider, key: missing}}, secretAccessKeyRef: {{name: provider, key: aws}}}}}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: caller}}
spec:
  keySecretRef: {{name: callers, key: key}}
"#,
        provider = canaries.provider_key,
        aws = canaries.aws_secret,
        virtual = canaries.virtual_key,
    );
    let operator = Operator::start_with(
        plane.admin_kubeconfig(),
        &[
            format!("--namespace={namespace}"),
            format!("--lease-namespace={namespace}"),
            "--admin-listen=127.0.0.1:0".to_owned(),
            "--debounce=50ms".to_owned(),
            format!("--state={}", redis.url()),
            "--spend-refresh-interval=1s".to_owned(),
        ],
        &[("RUST_LOG".to_owned(), "trace".to_owned())],
    )
    .await;
    kubectl_apply(plane, &namespace, &objects);
    wait_condition::<VirtualKey>(&client, &namespace, "caller", "Ready", "True", None).await;
    wait_condition::<ModelGroup>(&client, &namespace, "userinfo", "Accepted", "False", None).await;
    wait_condition::<ModelGroup>(
        &client,
        &namespace,
        "bedrock",
        "ResolvedRefs",
        "False",
        None,
    )
    .await;

    // A data plane following the namespace's config, with its credentials mounted.
    let credentials = tempfile::tempdir().unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let bundle = secrets.get("modelgate-credentials").await.unwrap();
    std::fs::write(
        credentials.path().join("credentials.json"),
        &bundle.data.unwrap()["credentials.json"].0,
    )
    .unwrap();
    let decisions = tempfile::tempdir().unwrap();
    let cluster_log = decisions.path().join("cluster.jsonl");
    let (cluster, cluster_api, cluster_admin) = data_plane(
        &[
            "--config-secret".into(),
            "modelgate-config".into(),
            "--namespace".into(),
            namespace.clone(),
            "--credentials-dir".into(),
            credentials.path().display().to_string(),
            "--state".into(),
            redis.url(),
            "--decision-log".into(),
            cluster_log.display().to_string(),
        ],
        &[("KUBECONFIG", plane.admin_kubeconfig().display().to_string())],
    )
    .await;
    let ready = wait_until(SETTLE, || async {
        matches!(http_get(cluster_admin, "/readyz").await, Some((200, _)))
    })
    .await;
    assert!(ready, "{}", cluster.output());
    let mut answers = drive(cluster_api, &fake, &canaries.virtual_key).await;
    assert!(fake.request_count() > 0, "no call reached the provider");
    assert!(
        fake.requests().iter().any(|r| r
            .headers
            .values()
            .any(|v| v.contains(&canaries.provider_key))),
        "the provider never got its key: the sweep would prove nothing"
    );

    // The same in standalone mode from a file, then a reload error of a file holding canaries.
    let standalone_dir = tempfile::tempdir().unwrap();
    let config = standalone_dir.path().join("config.yaml");
    let standalone_objects = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default, labels: {{modelgate.io/org: acme}}}}\n---\n{}",
        objects.replace("allowLoopbackUpstreams: true, ", "")
    );
    std::fs::write(&config, &standalone_objects).unwrap();
    let standalone_log = decisions.path().join("standalone.jsonl");
    let (standalone, standalone_api, standalone_admin) = data_plane(
        &[
            "--config".into(),
            config.display().to_string(),
            "--decision-log".into(),
            standalone_log.display().to_string(),
        ],
        &[],
    )
    .await;
    let ready = wait_until(SETTLE, || async {
        matches!(http_get(standalone_admin, "/readyz").await, Some((200, _)))
    })
    .await;
    assert!(ready, "{}", standalone.output());
    answers.push_str(&drive(standalone_api, &fake, &canaries.virtual_key).await);
    std::fs::write(&config, format!("{standalone_objects}\n  broken: [\n")).unwrap();
    let reported = wait_until(SETTLE, || {
        let output = standalone.output();
        async move { output.contains("config") && output.contains("ERROR") }
    })
    .await;
    assert!(reported, "the bad file was not reported");

    let mut sinks: BTreeMap<&str, String> = BTreeMap::new();
    sinks.insert("client answers", answers);
    sinks.insert("cluster data plane output", cluster.output());
    sinks.insert("standalone data plane output", standalone.output());
    sinks.insert("operator output", operator.logs());
    sinks.insert(
        "decision logs",
        [&cluster_log, &standalone_log]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect(),
    );
    for (name, admin) in [
        ("cluster /metrics", cluster_admin),
        ("standalone /metrics", standalone_admin),
        ("operator /metrics", operator.admin),
    ] {
        sinks.insert(
            name,
            http_get(admin, "/metrics").await.unwrap_or_default().1,
        );
    }
    // The objects' status (their spec is what the user wrote, URL included).
    let (_, objects, _) = kubectl(plane, &["get", "mg,rp,vk", "-n", &namespace, "-o", "json"]);
    let objects: Value = serde_json::from_str(&objects).unwrap();
    let statuses: Vec<&Value> = objects["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["status"])
        .collect();
    sinks.insert("object status", serde_json::to_string(&statuses).unwrap());
    let (_, events, _) = kubectl(
        plane,
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            &namespace,
            "-o",
            "json",
        ],
    );
    sinks.insert("events", events);
    sinks.insert("redis", redis_dump(&redis.url()).await);
    for (sink, text) in &sinks {
        assert!(
            !text.is_empty() || *sink == "redis",
            "sink {sink} is empty: the sweep would prove nothing"
        );
        assert_clean(sink, text, &canaries);
    }
    eprintln!(
        "swept {} sinks ({} bytes) for 4 canaries in {} spellings each",
        sinks.len(),
        sinks.values().map(String::len).sum::<usize>(),
        spellings(&canaries.provider_key).len()
    );
}

/// Every key and value in Redis, as text.
async fn redis_dump(url: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = connection.keys("*").await.unwrap_or_default();
    let mut dump = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap_or_default();
        let value: Value = match kind.as_str() {
            "string" => json!(
                connection
                    .get::<_, Option<Vec<u8>>>(&key)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            ),
            "hash" => json!(
                connection
                    .hgetall::<_, BTreeMap<String, String>>(&key)
                    .await
                    .unwrap_or_default()
            ),
            "zset" => json!(
                connection
                    .zrange_withscores::<_, Vec<(String, f64)>>(&key, 0, -1)
                    .await
                    .unwrap_or_default()
            ),
            "set" => json!(
                connection
                    .smembers::<_, Vec<String>>(&key)
                    .await
                    .unwrap_or_default()
            ),
            "list" => json!(
                connection
                    .lrange::<_, Vec<String>>(&key, 0, -1)
                    .await
                    .unwrap_or_default()
            ),
            other => json!(other),
        };
        dump.push_str(&format!("{key} = {value}\n"));
    }
    dump
}
