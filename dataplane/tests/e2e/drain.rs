//! SIGTERM to the real binary: `/readyz` turns 503 at once, new connections are served for the
//! drain delay, open streams finish within the grace, and what outlives the grace ends with an
//! explicit error event.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use fake_provider::{FakeProvider, Script};
use futures_util::StreamExt;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::support::{KEY, chat, chat_and_mock, client, eventually};

struct Binary {
    child: Child,
    api: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Binary {
    async fn start(config: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let stdout = dir.path().join("stdout");
        let child = Command::new(env!("CARGO_BIN_EXE_modelgate-dataplane"))
            .args([
                "--config",
                path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--cache",
                "off",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let listening = |which: &str| {
            std::fs::read_to_string(&stdout)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("modelgate-dataplane {which} listening on http://"))?
                        .parse()
                        .ok()
                })
        };
        eventually("the binary listening", || {
            let up = listening("admin").is_some();
            async move { up }
        })
        .await;
        Self {
            child,
            api: listening("api").unwrap(),
            admin: listening("admin").unwrap(),
            _dir: dir,
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn readyz(&self) -> Option<StatusCode> {
        let response = client()
            .get(format!("http://{}/readyz", self.admin).parse().unwrap())
            .await
            .ok()?;
        Some(response.status())
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(addr: SocketAddr, body: serde_json::Value) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Reads a whole streamed answer; its text.
async fn read_stream(addr: SocketAddr) -> Result<String, String> {
    let body =
        json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response = client()
        .request(post(addr, body))
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let mut body = response.into_body().into_data_stream();
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        text.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_streams_and_serves_new_connections_during_the_delay() {
    let fake = FakeProvider::start().await.unwrap();
    let binary = Binary::start(
        &chat_and_mock(&fake, "cheap"),
        &["--drain-delay-seconds", "2", "--drain-seconds", "20"],
    )
    .await;
    // 50 streams, each about two seconds long.
    for _ in 0..50 {
        fake.push(Script::Paced { gap_ms: 100 });
    }
    let streams: Vec<_> = (0..50)
        .map(|_| tokio::spawn(read_stream(binary.api)))
        .collect();
    eventually("50 streams open upstream", || async {
        fake.request_count() == 50
    })
    .await;

    binary.terminate();
    eventually("/readyz says 503", || async {
        binary.readyz().await == Some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    // New connections keep being served during the delay.
    let mut served = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..10 {
        tick.tick().await;
        let fresh = crate::support::client();
        let response = fresh
            .request(post(binary.api, chat("cheap")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        served += 1;
    }
    for stream in streams {
        let text = stream
            .await
            .unwrap()
            .expect("a stream failed during the drain");
        assert!(
            text.trim_end().ends_with("data: [DONE]"),
            "a stream did not finish: {text}"
        );
    }
    eprintln!("during the drain: 50 streams finished, {served} new requests served");
    let mut binary = binary;
    let status = binary.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_outlives_the_grace_ends_with_an_error_event() {
    let fake = FakeProvider::start().await.unwrap();
    let binary = Binary::start(&chat_and_mock(&fake, "cheap"), &["--drain-seconds", "2"]).await;
    fake.push(Script::StallAfter { chunks: 2 });
    let stream = tokio::spawn(read_stream(binary.api));
    eventually("the stream open upstream", || async {
        fake.request_count() == 1
    })
    .await;
    binary.terminate();
    let text = stream
        .await
        .unwrap()
        .expect("the stream broke instead of ending");
    assert!(text.contains("gateway_shutting_down"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let mut binary = binary;
    assert!(binary.child.wait().unwrap().success());
}

/// Threads of a process, by their names.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_thread_starts_no_workers_and_serves_concurrent_streams() {
    let fake = FakeProvider::start().await.unwrap();
    let config = chat_and_mock(&fake, "cheap");
    let single = Binary::start(&config, &["--worker-threads", "1"]).await;
    let three = Binary::start(&config, &["--worker-threads", "3"]).await;
    let (single_threads, three_threads) = (threads(single.child.id()), threads(three.child.id()));
    // The same start either way; three workers are two threads more than none beside main.
    assert!(
        three_threads.len() >= single_threads.len() + 2,
        "--worker-threads 1: {single_threads:?}; 3: {three_threads:?}"
    );

    for _ in 0..20 {
        fake.push(Script::Paced { gap_ms: 20 });
    }
    let streams: Vec<_> = (0..20)
        .map(|_| tokio::spawn(read_stream(single.api)))
        .collect();
    for stream in streams {
        let text = stream.await.unwrap().expect("a stream failed");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
}
