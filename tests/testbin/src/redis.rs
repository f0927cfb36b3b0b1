//! A real `redis-server` (Debian's package, which `tests/testbin/install-redis.sh` installs) on
//! a free loopback port, with no persistence, stopped when dropped.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::wait_until;

/// A `redis-server` with no persistence, stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_on(crate::free_port()).await
    }

    /// Starts on `port` (again, after [`RedisServer::kill`]). A port taken by someone else in
    /// the meantime makes `redis-server` exit at once: it is retried until the port is free.
    pub async fn start_on(port: u16) -> Self {
        for _ in 0..50 {
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (make test installs it from Debian's packages)");
            let url = format!("redis://127.0.0.1:{port}/");
            let up = wait_until(Duration::from_secs(10), || {
                let (url, exited) = (url.clone(), matches!(child.try_wait(), Ok(Some(_))));
                async move { exited || ping(&url).await }
            })
            .await;
            // Only an answer while our child runs is ours: one that exited lost the bind.
            if up && matches!(child.try_wait(), Ok(None)) {
                return Self {
                    child: Some(child),
                    port,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server never started on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: Redis disappears mid-run.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .is_ok()
}
