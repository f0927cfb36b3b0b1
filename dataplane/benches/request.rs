//! Allocations per whole request: a gateway in this process, served on one thread as a sidecar
//! is, between a client and an upstream that allocate nothing per request (raw sockets, buffers
//! made up front), so every allocation counted is the gateway's. Scenarios: a complete answer
//! (cache off), a 20-event stream, and a cache hit.
//! `cargo bench -p modelgate-dataplane --bench request`.

// A benchmark panics on broken setup; that is its assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    alloc::System,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    thread,
};

use modelgate_dataplane::{CacheBackend, Gateway, GatewayOptions};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const KEY: &str = "sk-mg-bench-alloc-0001";
const WARM_UP: usize = 200;
const MEASURED: usize = 2_000;
const BUFFER: usize = 256 * 1024;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}"#;

fn main() {
    let upstream = upstream();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, gateway_config(upstream)).unwrap();

    println!("allocations per request (gateway on one thread; {MEASURED} requests each):");
    for (scenario, model, stream, cache) in [
        ("complete answer, cache off", "bench", false, false),
        ("20-event stream, cache off", "bench-sse", true, false),
        ("complete answer, cache hit", "bench", false, true),
    ] {
        let gateway = Served::start(&config, cache);
        let request = request(model, stream);
        let mut client = TcpStream::connect(gateway.addr).unwrap();
        client.set_nodelay(true).unwrap();
        let mut buffer = vec![0u8; BUFFER];
        for _ in 0..WARM_UP {
            exchange(&mut client, request.as_bytes(), &mut buffer);
        }
        let region = Region::new(ALLOCATOR);
        for _ in 0..MEASURED {
            exchange(&mut client, request.as_bytes(), &mut buffer);
        }
        let change = region.change();
        println!(
            "  {scenario}: {:.1} allocations, {:.0} bytes allocated",
            change.allocations as f64 / MEASURED as f64,
            change.bytes_allocated as f64 / MEASURED as f64,
        );
        drop(client);
        gateway.stop();
    }
}

/// A gateway on its own thread with a current-thread runtime, until `stop`.
struct Served {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Served {
    fn start(config: &std::path::Path, cache: bool) -> Self {
        let mut options = GatewayOptions::local(config.to_path_buf());
        if !cache {
            options.cache = CacheBackend::Off;
        }
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let gateway = Gateway::start(options).await.unwrap();
                addr_tx.send(gateway.api_addr()).unwrap();
                let _ = stopped.await;
                gateway.shutdown().await;
            });
        });
        Self {
            addr: addr_rx.recv().unwrap(),
            stop,
            thread,
        }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

fn request(model: &str, stream: bool) -> String {
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}],"stream":{stream}}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends one request and reads its whole answer into `buffer`, allocating nothing.
fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut [u8]) {
    stream.write_all(request).unwrap();
    let length = read_message(stream, buffer);
    assert!(
        buffer[..length].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buffer[..length])
    );
}

/// Reads one HTTP/1.1 message (head and a `content-length` or chunked body) into `buffer`;
/// returns its length. No allocation.
fn read_message(stream: &mut TcpStream, buffer: &mut [u8]) -> usize {
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..]).unwrap();
        assert!(read > 0, "the peer closed the connection mid-message");
        filled += read;
        if let Some(length) = complete(&buffer[..filled]) {
            assert_eq!(length, filled, "one message at a time");
            return length;
        }
    }
}

/// The length of the message at the start of `bytes` once it is all there.
fn complete(bytes: &[u8]) -> Option<usize> {
    let head = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let headers = &bytes[..head];
    if let Some(length) = header(headers, b"content-length:") {
        let length: usize = std::str::from_utf8(length).ok()?.trim().parse().ok()?;
        return (bytes.len() >= head + length).then_some(head + length);
    }
    // Chunked: the last chunk is empty. No payload here contains a bare CRLF pair.
    bytes.ends_with(b"\r\n0\r\n\r\n").then_some(bytes.len())
}

fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name))
            .then(|| &line[name.len()..])
    })
}

/// An upstream speaking OpenAI's wire format from answers built up front: `/complete/…` a
/// chat completion, `/sse/…` a 20-event stream. One thread per connection.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let completion: &'static [u8] = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
        COMPLETION.len()
    )
    .into_bytes()
    .leak();
    let stream: &'static [u8] = sse_answer().into_bytes().leak();
    thread::spawn(move || {
        for connection in listener.incoming() {
            let mut connection = connection.unwrap();
            connection.set_nodelay(true).unwrap();
            thread::spawn(move || {
                let mut buffer = vec![0u8; BUFFER];
                loop {
                    let mut filled = 0;
                    let length = loop {
                        match connection.read(&mut buffer[filled..]) {
                            Ok(0) | Err(_) => return,
                            Ok(read) => filled += read,
                        }
                        if let Some(length) = complete(&buffer[..filled]) {
                            break length;
                        }
                    };
                    let answer = if buffer[..length].starts_with(b"POST /sse/") {
                        stream
                    } else {
                        completion
                    };
                    if connection.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The role, eighteen words, the finish with usage, then `[DONE]`: one chunk each.
fn sse_answer() -> String {
    let chunk = |delta: &str, finish: &str, usage: &str| {
        format!(
            r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]{usage}}}"#
        ) + "\n\n"
    };
    let mut events = vec![chunk(r#"{"role":"assistant","content":""}"#, "null", "")];
    events.extend((0..18).map(|i| chunk(&format!(r#"{{"content":"word{i} "}}"#), "null", "")));
    events.push(chunk(
        "{}",
        r#""stop""#,
        r#","usage":{"prompt_tokens":9,"completion_tokens":18,"total_tokens":27}"#,
    ));
    events.push("data: [DONE]\n\n".to_owned());
    let mut answer =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_owned();
    for event in events {
        answer += &format!("{:x}\r\n{event}\r\n", event.len());
    }
    answer + "0\r\n\r\n"
}

fn gateway_config(upstream: SocketAddr) -> String {
    let group = |name: &str, path: &str| {
        format!(
            "apiVersion: modelgate.io/v1alpha1\nkind: ModelGroup\nmetadata: {{name: {name}}}\n\
             spec:\n  models: [{name}]\n  deployments:\n    - name: up\n      provider: openai-compatible\n\
             \x20     model: bench\n      baseUrl: http://{upstream}/{path}/v1\n      pricing: {{input: 1.0, output: 2.0}}\n"
        )
    };
    [
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-keys, labels: {{modelgate.io/virtual-key: \"true\"}}}}\n\
             stringData: {{bench: {KEY}}}\n"
        ),
        group("bench", "complete"),
        group("bench-sse", "sse"),
        "apiVersion: modelgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {name: bench}\nspec:\n  \
         keySecretRef: {name: bench-keys, key: bench}\n"
            .to_owned(),
    ]
    .join("---\n")
}
