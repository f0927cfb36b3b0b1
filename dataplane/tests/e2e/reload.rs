//! Hot reload: file rewrites and kubelet-style symlink swaps are picked up, a bad file keeps the
//! last good config, readiness waits for the first good config, and swaps under load fail no
//! in-flight request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use fake_provider::FakeProvider;
use http::StatusCode;

use crate::support::*;

#[tokio::test]
async fn a_rewritten_file_is_served_without_a_restart() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start(&chat_and_mock(&fake, "before")).await;
    assert_eq!(
        gw.post("/v1/chat/completions", chat("after")).await.status,
        StatusCode::NOT_FOUND
    );
    let next = chat_and_mock(&fake, "after");
    gw.write_config(&next);
    gw.wait_for_config(&next).await;
    assert_eq!(
        gw.post("/v1/chat/completions", chat("after")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.post("/v1/chat/completions", chat("before")).await.status,
        StatusCode::NOT_FOUND
    );
}

/// The kubelet's layout: `config.yaml -> ..data/config.yaml`, `..data -> ..<timestamp>`, and an
/// update renames a new `..data` symlink over the old one.
#[tokio::test]
async fn a_kubelet_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let fake = FakeProvider::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_11_23_1")).unwrap();
    std::fs::write(
        root.join("..2026_11_23_1/config.yaml"),
        chat_and_mock(&fake, "before"),
    )
    .unwrap();
    symlink("..2026_11_23_1", root.join("..data")).unwrap();
    symlink("..data/config.yaml", root.join("config.yaml")).unwrap();
    let config_path = root.join("config.yaml");
    let gw = TestGateway::start_at(dir, config_path).await;
    assert_eq!(
        gw.post("/v1/chat/completions", chat("before")).await.status,
        StatusCode::OK
    );

    let root = gw.dir.path();
    let next = chat_and_mock(&fake, "after");
    std::fs::create_dir(root.join("..2026_11_23_2")).unwrap();
    std::fs::write(root.join("..2026_11_23_2/config.yaml"), &next).unwrap();
    symlink("..2026_11_23_2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_11_23_1")).unwrap();

    gw.wait_for_config(&next).await;
    assert_eq!(
        gw.post("/v1/chat/completions", chat("after")).await.status,
        StatusCode::OK
    );
}

async fn reload_failures(gw: &TestGateway) -> u64 {
    let metrics = gw.get(gw.admin_url("/metrics"), None).await.text();
    metrics
        .lines()
        .find(|l| l.starts_with("modelgate_config_reloads_total{result=\"failure\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_bad_file_keeps_the_last_good_config() {
    let fake = FakeProvider::start().await.unwrap();
    let good = chat_and_mock(&fake, "before");
    let gw = TestGateway::start(&good).await;
    let served = gw.gateway.config().checksum();

    let broken = "apiVersion: v1\nkind: Secret\nmetadata: {name: [broken\n";
    gw.write_config(broken);
    eventually("the bad file to be counted", || async {
        reload_failures(&gw).await >= 1
    })
    .await;
    // The same bad bytes again wake the loader but are not reported again; the next, different
    // bad file is. Events are handled in order, so once the second counts the first rewrite has
    // been handled too.
    gw.write_config(broken);
    gw.write_config("kind: [still broken\n");
    eventually("the second bad file to be counted", || async {
        reload_failures(&gw).await >= 2
    })
    .await;
    assert_eq!(reload_failures(&gw).await, 2, "one report per bad change");
    assert_eq!(
        gw.gateway.config().checksum(),
        served,
        "still the last good config"
    );
    assert_eq!(
        gw.post("/v1/chat/completions", chat("before")).await.status,
        StatusCode::OK
    );

    let fixed = chat_and_mock(&fake, "after");
    gw.write_config(&fixed);
    gw.wait_for_config(&fixed).await;
    assert_eq!(
        gw.post("/v1/chat/completions", chat("after")).await.status,
        StatusCode::OK
    );
    assert_eq!(reload_failures(&gw).await, 2);
}

/// Opens of the config file, as inotify reports them to an independent watcher.
fn count_opens(path: &std::path::Path) -> (notify::RecommendedWatcher, Arc<AtomicUsize>) {
    use notify::{
        EventKind, RecursiveMode, Watcher,
        event::{AccessKind, AccessMode},
    };
    let opens = Arc::new(AtomicUsize::new(0));
    let counter = opens.clone();
    let file = path.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(
                event.kind,
                EventKind::Access(AccessKind::Open(AccessMode::Any))
            )
            && event.paths.contains(&file)
        {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    watcher
        .watch(path.parent().unwrap(), RecursiveMode::NonRecursive)
        .unwrap();
    (watcher, opens)
}

/// An idle data plane runs in every pod: after a change it reads its file a bounded number of
/// times, then not again (it used to wake on its own reads and re-read the file forever).
#[tokio::test]
async fn an_idle_gateway_does_not_reread_its_file() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start(&chat_and_mock(&fake, "before")).await;
    let (_watcher, opens) = count_opens(&gw.config_path);
    let next = chat_and_mock(&fake, "after");
    gw.write_config(&next);
    gw.wait_for_config(&next).await;
    let after_change = opens.load(Ordering::SeqCst);
    assert!(after_change >= 1, "the change was read");
    // Waiting for reads that must not come: the condition is the failure.
    let reread = tokio::time::timeout(
        Duration::from_secs(2),
        eventually("more reads", || {
            std::future::ready(opens.load(Ordering::SeqCst) > after_change + 2)
        }),
    )
    .await;
    assert!(
        reread.is_err(),
        "an idle gateway kept reading its config: {} opens",
        opens.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn readiness_waits_for_the_first_good_config() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start("kind: [not a config\n").await;
    let readyz = gw.get(gw.admin_url("/readyz"), None).await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    let early = gw.post("/v1/chat/completions", chat("before")).await;
    assert_eq!(
        (early.status, early.error_code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "config_not_loaded")
    );

    let good = chat_and_mock(&fake, "before");
    gw.write_config(&good);
    gw.wait_for_config(&good).await;
    let readyz = gw.get(gw.admin_url("/readyz"), None).await;
    assert_eq!(readyz.status, StatusCode::OK);
    assert_eq!(readyz.json()["checksum"], checksum_of(&good));
}

/// 50 config swaps while clients keep requests in flight: every request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_fail_no_request() {
    // Upstream latency keeps requests in flight across each swap.
    let fake = FakeProvider::start_with("127.0.0.1:0".parse().unwrap(), Duration::from_millis(5))
        .await
        .unwrap();
    let gw = Arc::new(TestGateway::start(&chat_and_mock(&fake, "v0")).await);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (gw, stop, ok) = (gw.clone(), stop.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = gw.post("/v1/chat/completions", chat("chat")).await;
                if answer.status == StatusCode::OK {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.push((answer.status, answer.text()));
                }
            }
            failures
        }));
    }
    for swap in 1..=50 {
        let before = ok.load(Ordering::Relaxed);
        let next = chat_and_mock(&fake, &format!("v{swap}"));
        gw.write_config(&next);
        gw.wait_for_config(&next).await;
        // Traffic keeps flowing between swaps, so every swap lands on requests in flight.
        eventually("requests between swaps", || {
            std::future::ready(ok.load(Ordering::Relaxed) > before)
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        ok.load(Ordering::Relaxed) >= 50,
        "load ran across the swaps"
    );
}

/// Shutdown stops accepting, lets requests in flight finish, then returns.
#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let fake = FakeProvider::start().await.unwrap();
    let gw = TestGateway::start(&chat_and_mock(&fake, "m")).await;
    for _ in 0..3 {
        fake.push(fake_provider::Script::Hold);
    }
    let url = gw.url("/v1/chat/completions");
    let mut in_flight = Vec::new();
    for i in 1..=3 {
        let (client, url) = (client(), url.clone());
        in_flight.push(tokio::spawn(async move {
            let request = http::Request::post(url)
                .header("authorization", format!("Bearer {KEY}"))
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    chat("chat").to_string(),
                )))
                .unwrap();
            let response = client.request(request).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, body)
        }));
        eventually("the request to be held upstream", || {
            std::future::ready(fake.request_count() == i)
        })
        .await;
    }
    let api = gw.gateway.api_addr();
    let TestGateway {
        gateway, dir: _dir, ..
    } = gw;
    let shutdown = tokio::spawn(gateway.shutdown());
    eventually("the listener to close", || async {
        tokio::net::TcpStream::connect(api).await.is_err()
    })
    .await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the requests in flight"
    );
    fake.release(3);
    for request in in_flight {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8_lossy(&body).contains(fake_provider::CHAT_PREFIX));
    }
    shutdown.await.unwrap();
}
