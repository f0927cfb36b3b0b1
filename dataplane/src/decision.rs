//! The decision log: one JSON line per request explaining how it was routed and what happened.
//! Records go through a bounded channel to a writer task; when the writer falls behind, records
//! are dropped and counted rather than slowing requests down.

use std::{path::PathBuf, sync::Arc};

use serde::Serialize;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt, BufWriter},
    sync::mpsc,
};

use crate::{
    provider::Usage,
    route::RoutingRecord,
    telemetry::Metrics,
    trace::{AttemptSpan, RequestTrace},
};

const QUEUE: usize = 8192;

/// One request, end to end.
#[derive(Debug, Default, Serialize)]
pub struct DecisionRecord {
    pub request_id: String,
    /// When the request arrived; written as RFC 3339 by the log writer, off the request path.
    pub timestamp: jiff::Timestamp,
    pub endpoint: &'static str,
    /// The inbound API, when the request came in one other than OpenAI's (`messages`,
    /// `responses`); it then runs as the chat completion it translates to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<&'static str>,
    /// `namespace/name` of the virtual key (never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<Arc<str>>,
    /// The model name the client asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The ModelGroup that served it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Arc<str>>,
    /// The strategy that ordered the first group of the plan.
    pub strategy: &'static str,
    /// Deployment ids in the order they would be tried.
    pub plan: Vec<Arc<str>>,
    /// Everything the plan was derived from; `modelgate-dataplane explain` replays it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingRecord>,
    /// The second plan, over the context-window fallbacks, when the first group's provider found
    /// the request too long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window_routing: Option<RoutingRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub stream: bool,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The usage is the gateway's estimate (a stream that ended before the provider's usage
    /// arrived), not the provider's count.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// What the call cost in USD, from the serving deployment's price and the real usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Where that price came from: `deployment` (its `pricing`) or `catalog` (list price).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_source: Option<&'static str>,
    /// The response cache's decision: `hit`, `miss`, `bypass` or `store-skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// The worst-case cost reserved against budgets before the call, in USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    pub config_checksum: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// The request's spend tags, as its policy allowed them.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub spend_tags: std::collections::BTreeMap<String, String>,
    /// The trace the request's spans go to, when traces are exported.
    #[serde(skip)]
    pub trace: Option<RequestTrace>,
    /// The answer's finish reasons (read only when traces are exported).
    #[serde(skip)]
    pub finish_reasons: Vec<String>,
}

/// One call to one deployment.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub deployment: Arc<str>,
    pub provider: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// `ok`, or the error class (connect, timeout, status, protocol).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its span, when traces are exported.
    #[serde(skip)]
    pub span: Option<AttemptSpan>,
}

/// Where the log goes.
#[derive(Debug, Clone)]
pub enum DecisionTarget {
    Stdout,
    File(PathBuf),
}

/// Handle for submitting records; cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    tx: Option<mpsc::Sender<DecisionRecord>>,
    metrics: Arc<Metrics>,
}

impl DecisionLog {
    /// A log that writes nothing.
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self { tx: None, metrics }
    }

    /// Starts the writer task.
    pub async fn start(target: DecisionTarget, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        Ok(match target {
            DecisionTarget::Stdout => Self::with_writer(tokio::io::stdout(), metrics),
            DecisionTarget::File(path) => {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await?;
                Self::with_writer(file, metrics)
            }
        })
    }

    /// A log whose writer task writes to `out`.
    fn with_writer<W: AsyncWrite + Unpin + Send + 'static>(out: W, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_all(rx, out));
        Self {
            tx: Some(tx),
            metrics,
        }
    }

    /// Queues a record without waiting.
    pub fn record(&self, record: DecisionRecord) {
        if let Some(tx) = &self.tx
            && tx.try_send(record).is_err()
        {
            self.metrics.decision_dropped();
        }
    }
}

async fn write_all<W: AsyncWrite + Unpin>(mut rx: mpsc::Receiver<DecisionRecord>, out: W) {
    let mut out = BufWriter::new(out);
    let mut line = Vec::with_capacity(1024);
    while let Some(record) = rx.recv().await {
        let mut next = Some(record);
        // Drain what is queued, then flush once: one write syscall per burst.
        while let Some(record) = next {
            line.clear();
            if serde_json::to_writer(&mut line, &record).is_ok() {
                line.push(b'\n');
                if let Err(error) = out.write_all(&line).await {
                    tracing::error!(%error, "decision log write failed");
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(error) = out.flush().await {
            tracing::error!(%error, "decision log flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_writer_never_blocks_a_request_records_are_dropped_and_counted() {
        let metrics = Arc::new(Metrics::new());
        // Nobody reads the other end: the writer task blocks once the pipe's 64 bytes are full.
        let (stalled, _unread) = tokio::io::duplex(64);
        let log = DecisionLog::with_writer(stalled, metrics.clone());
        for i in 0..(QUEUE + 500) {
            log.record(DecisionRecord {
                request_id: format!("req_{i}"),
                ..DecisionRecord::default()
            });
        }
        let text = metrics.encode();
        let dropped: u64 = text
            .lines()
            .find(|l| l.starts_with("modelgate_decision_log_dropped_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(
            dropped >= 500,
            "every record past the queue is dropped, not waited for: {dropped}"
        );
    }
}
