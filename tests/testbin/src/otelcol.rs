//! A real OpenTelemetry Collector (`tests/otelcol`, built by `build-otelcol.sh`, cached outside
//! the clone): its OTLP/HTTP receiver on a free loopback port, and its file exporter writing
//! what it received as OTLP JSON lines, which the tests read back.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use crate::{process::Supervised, wait_until};

static OTELCOL: OnceLock<PathBuf> = OnceLock::new();

fn otelcol() -> &'static Path {
    OTELCOL.get_or_init(|| crate::built_by("build-otelcol.sh"))
}

/// A running collector, stopped when dropped.
pub struct Collector {
    _process: Supervised,
    dir: tempfile::TempDir,
    port: u16,
}

impl Collector {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = crate::free_port();
            let config = dir.path().join("config.yaml");
            std::fs::write(
                &config,
                format!(
                    r#"receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {out}
    flush_interval: 50ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
    metrics: {{receivers: [otlp], exporters: [file]}}
"#,
                    out = dir.path().join("received.jsonl").display()
                ),
            )
            .expect("write the collector config");
            let mut process = Supervised::spawn(
                otelcol(),
                &[format!("--config=file:{}", config.display())],
                &dir.path().join("otelcol.log"),
                None,
            )
            .expect("start the collector");
            let log = dir.path().join("otelcol.log");
            let up = wait_until(Duration::from_secs(30), || {
                let exited = process.has_exited();
                async move {
                    exited
                        || tokio::net::TcpStream::connect(("127.0.0.1", port))
                            .await
                            .is_ok()
                }
            })
            .await;
            if up && !process.has_exited() {
                return Self {
                    _process: process,
                    dir,
                    port,
                };
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            // Only a lost race for the port is worth another try.
            assert!(
                said.contains("address already in use"),
                "the OpenTelemetry Collector did not start:\n{said}"
            );
        }
        panic!("the OpenTelemetry Collector never started");
    }

    /// The OTLP/HTTP base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every export request received so far, as the file exporter wrote them (OTLP JSON, one
    /// `ExportTraceServiceRequest` or `ExportMetricsServiceRequest` per line).
    pub fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The collector's own log, for a failed test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("otelcol.log")).unwrap_or_default()
    }
}
