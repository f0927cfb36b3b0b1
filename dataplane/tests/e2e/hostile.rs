//! Hostile clients: a body that says `model` twice, a lying `Host` and an absolute-form target,
//! a thousand slowloris connections, and more requests or connections than the caps allow.

use std::time::Duration;

use fake_provider::{FakeProvider, Script};
use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::support::{KEY, TestGateway, chat, chat_and_mock, eventually};

#[tokio::test]
async fn a_member_given_twice_is_refused_before_anything_is_sent() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start(&chat_and_mock(&fake, "cheap")).await;
    let smuggled =
        r#"{"model":"cheap","messages":[{"role":"user","content":"hi"}],"model":"chat"}"#;
    let answer = gw.post_bytes(smuggled).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert_eq!(answer.error_code(), "duplicate_field");
    assert_eq!(answer.json()["error"]["param"], "model");
    assert_eq!(fake.request_count(), 0, "nothing reached the provider");
}

/// Sends raw HTTP/1.1 and returns the whole answer (the connection is closed by the request).
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn neither_the_host_header_nor_an_absolute_target_changes_what_is_served() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start(&chat_and_mock(&fake, "cheap")).await;
    let addr = gw.gateway.api_addr();
    let body = r#"{"model":"cheap","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST http://admin.internal:9464/v1/chat/completions HTTP/1.1\r\nHost: admin.internal:9464\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-modelgate-routed-model: other"),
        "{answer}"
    );
    // The admin endpoints are not on the public listener, whatever the Host says.
    let metrics = raw(
        addr,
        "GET http://127.0.0.1/metrics HTTP/1.1\r\nHost: localhost:9464\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(metrics.starts_with("HTTP/1.1 404"), "{metrics}");
    assert!(!metrics.contains("modelgate_requests_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_connections_neither_stop_a_normal_client_nor_stay_open() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start_custom(&chat_and_mock(&fake, "cheap"), |options| {
        options.clients.header_read = Duration::from_secs(2);
        options.clients.body_read = Duration::from_secs(2);
    })
    .await;
    let addr = gw.gateway.api_addr();
    // Half trickle their request head, half their body, one byte a second each.
    let mut slow = Vec::new();
    for n in 0..1000 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let opening = if n % 2 == 0 {
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n".to_owned()
        } else {
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
            )
        };
        stream.write_all(opening.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut open = slow;
        let mut closed = 0;
        for _ in 0..15 {
            tick.tick().await;
            let mut still = Vec::new();
            for mut stream in open {
                let wrote = stream.write_all(b"a").await.is_ok();
                let mut probe = [0u8; 512];
                let gone = matches!(
                    tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await,
                    Ok(Ok(0) | Err(_))
                ) || !wrote;
                if gone {
                    closed += 1;
                } else {
                    still.push(stream);
                }
            }
            open = still;
            if open.is_empty() {
                break;
            }
        }
        (closed, open.len())
    });

    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let answer = gw.post("/v1/chat/completions", chat("cheap")).await;
        latencies.push(started.elapsed());
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    latencies.sort();
    eprintln!(
        "a normal client beside 1000 slowloris connections: p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    // Far below the header timeout: no normal request waited behind the slow ones.
    assert!(*latencies.last().unwrap() < Duration::from_secs(1));
    let (closed, open) = trickle.await.unwrap();
    assert_eq!(
        open, 0,
        "slow connections still open after the read timeouts"
    );
    assert_eq!(closed, 1000);
}

#[tokio::test]
async fn past_the_in_flight_cap_a_request_gets_503_with_retry_after() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start_custom(&chat_and_mock(&fake, "cheap"), |options| {
        options.clients.max_in_flight = 2;
    })
    .await;
    fake.push(Script::Hold);
    fake.push(Script::Hold);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = gw.url("/v1/chat/completions");
            let body = serde_json::to_vec(&chat("chat")).unwrap();
            let client = crate::support::client();
            tokio::spawn(async move {
                let request = http::Request::post(url)
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                client.request(request).await.unwrap().status()
            })
        })
        .collect();
    eventually("both calls held upstream", || async {
        fake.request_count() == 2
    })
    .await;
    let refused = gw.post("/v1/chat/completions", chat("cheap")).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error_code(), "gateway_overloaded");
    assert_eq!(refused.header("retry-after"), "1");
    fake.release(2);
    for call in held {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    // The slots came back with the answers.
    assert_eq!(
        gw.post("/v1/chat/completions", chat("cheap")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn past_the_connection_cap_a_new_connection_gets_503_and_is_closed() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start_custom(&chat_and_mock(&fake, "cheap"), |options| {
        options.clients.max_connections = 2;
    })
    .await;
    let addr = gw.gateway.api_addr();
    let _idle: Vec<TcpStream> =
        futures_util::future::join_all((0..2).map(|_| TcpStream::connect(addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    // The two idle connections hold the slots once accepted.
    let answer = std::cell::RefCell::new(String::new());
    eventually("a third connection refused", || async {
        let got = raw(addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let refused = got.starts_with("HTTP/1.1 503");
        *answer.borrow_mut() = got;
        refused
    })
    .await;
    let answer = answer.into_inner();
    assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
}
