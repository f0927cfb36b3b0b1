//! OpenTelemetry export over OTLP/HTTP (protobuf): one server span per request and one client
//! span per upstream attempt, with the GenAI semantic conventions, and the GenAI client metrics.
//! Spans are made once the request has finished, from what the finish step knows, with the span
//! ids the provider was sent in `traceparent`; they go through the SDK's batch processor, which
//! exports from a thread of its own, so a request never waits on a collector. Off unless an
//! endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`). Prompt and completion content is
//! never exported.

mod client;
mod spans;

use std::time::Duration;

use opentelemetry::{
    InstrumentationScope, KeyValue,
    metrics::{Histogram, MeterProvider},
};
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{BatchConfigBuilder, BatchSpanProcessor, SpanProcessor},
};

use super::Finished;
use client::OtlpClient;

/// Where and how often to export.
#[derive(Clone, Debug)]
pub struct OtelOptions {
    /// The OTLP/HTTP base URL; `/v1/traces` and `/v1/metrics` are appended.
    pub endpoint: String,
    /// How long finished spans may wait to be batched (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub batch_delay: Duration,
    /// How often metrics are exported (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s).
    pub metrics_interval: Duration,
}

impl OtelOptions {
    pub fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            batch_delay: Duration::from_secs(5),
            metrics_interval: Duration::from_secs(60),
        }
    }
}

/// Per export call, connect included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Token counts: the semantic conventions' advised buckets.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// Seconds: the semantic conventions' advised buckets.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

pub struct Otel {
    spans: BatchSpanProcessor,
    meters: SdkMeterProvider,
    token_usage: Histogram<u64>,
    operation_duration: Histogram<f64>,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Otel")
    }
}

impl Otel {
    /// Builds the exporters; exports run on `runtime`. The resource is `service.name` (from
    /// `OTEL_SERVICE_NAME`, else `modelgate`), `service.version`, and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn start(options: &OtelOptions, runtime: tokio::runtime::Handle) -> Result<Self, String> {
        let base = options.endpoint.trim_end_matches('/');
        let client = OtlpClient::new(runtime, EXPORT_TIMEOUT);
        let span_exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(client.clone())
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("OTLP span exporter: {e}"))?;
        let metric_exporter = MetricExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(format!("{base}/v1/metrics"))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("OTLP metric exporter: {e}"))?;
        let mut resource = Resource::builder()
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("modelgate");
        }
        let resource = resource.build();
        let mut spans = BatchSpanProcessor::builder(span_exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(options.batch_delay)
                    .build(),
            )
            .build();
        spans.set_resource(&resource);
        let meters = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(
                PeriodicReader::builder(metric_exporter)
                    .with_interval(options.metrics_interval)
                    .build(),
            )
            .build();
        let meter = meters.meter("modelgate");
        let token_usage = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of input and output tokens used")
            .with_boundaries(TOKEN_BUCKETS.to_vec())
            .build();
        let operation_duration = meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_description("GenAI operation duration")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        Ok(Self {
            spans,
            meters,
            token_usage,
            operation_duration,
            scope: InstrumentationScope::builder("modelgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// Hands the request's spans to the batch processor and records the GenAI metrics; never
    /// blocks (a full queue drops spans, as the SDK does).
    pub fn record(&self, request: &Finished<'_>) {
        if let Some(trace) = request.trace.filter(|trace| trace.server.sampled) {
            for span in spans::of(request, trace, &self.scope) {
                self.spans.on_end(span);
            }
        }
        self.record_metrics(request);
    }

    fn record_metrics(&self, request: &Finished<'_>) {
        let Some(served) = spans::served_span(request) else {
            return;
        };
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", spans::operation(request.endpoint)),
            KeyValue::new("gen_ai.provider.name", served.provider_name),
            KeyValue::new("gen_ai.request.model", request.request_model.to_owned()),
            KeyValue::new("gen_ai.response.model", served.model.clone()),
        ];
        if let Some(server) = &served.server_address {
            attributes.push(KeyValue::new("server.address", server.clone()));
        }
        if let Some(code) = request.error_code {
            let mut failed = attributes.clone();
            failed.push(KeyValue::new("error.type", code));
            self.operation_duration.record(request.seconds, &failed);
            return;
        }
        self.operation_duration.record(request.seconds, &attributes);
        for (token_type, count) in [
            ("input", request.input_tokens),
            ("output", request.output_tokens),
        ] {
            let mut typed = attributes.clone();
            typed.push(KeyValue::new("gen_ai.token.type", token_type));
            self.token_usage.record(count, &typed);
        }
    }

    /// Exports what is still queued; at shutdown.
    pub fn shutdown(&self) {
        if let Err(error) = self.spans.shutdown() {
            tracing::warn!(%error, "OTLP span export at shutdown failed");
        }
        if let Err(error) = self.meters.shutdown() {
            tracing::warn!(%error, "OTLP metric export at shutdown failed");
        }
    }
}
