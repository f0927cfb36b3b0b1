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

    /// Starts on `port` (again, after [`RedisServer::kill`]).
    pub async fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
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
        let server = Self {
            child: Some(child),
            port,
        };
        let url = server.url();
        let up = wait_until(Duration::from_secs(10), || {
            let url = url.clone();
            async move { ping(&url).await }
        })
        .await;
        assert!(up, "redis-server on port {port} never answered PING");
        server
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
