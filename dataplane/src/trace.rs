//! W3C trace context (`traceparent`): read from the client, made for each upstream attempt, and
//! carried in the decision record so the finish step can export the request's spans with the
//! ids the provider saw. A leaf: it imports nothing of the request path.

use std::time::SystemTime;

/// The incoming `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";

/// Where a span sits in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl SpanIds {
    /// Reads a `traceparent` value (version 00 or a later one read as 00); `None` for anything
    /// malformed, which per the spec starts a new trace rather than failing the request.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2
            || version == "ff"
            || (version == "00" && parts.next().is_some())
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }

    /// A new span of the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }
}

/// The request's place in a trace: its own server span, and the client's span when the client
/// sent a `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTrace {
    pub server: SpanIds,
    pub parent: Option<[u8; 8]>,
}

impl RequestTrace {
    /// Continues the client's trace, or starts a sampled one.
    pub fn new(incoming: Option<SpanIds>) -> Self {
        match incoming {
            Some(parent) => Self {
                server: parent.child(),
                parent: Some(parent.span_id),
            },
            None => Self {
                server: SpanIds {
                    trace_id: fastrand::u128(1..).to_be_bytes(),
                    span_id: new_span_id(),
                    sampled: true,
                },
                parent: None,
            },
        }
    }
}

/// One upstream attempt's span: its ids (sent to the provider), when it started, and what it
/// called.
#[derive(Clone, Debug)]
pub struct AttemptSpan {
    pub ids: SpanIds,
    pub started: SystemTime,
    /// The deployment's upstream model id.
    pub model: String,
    /// `gen_ai.provider.name`.
    pub provider_name: &'static str,
    /// The host called (`server.address`); none for the built-in mock.
    pub server_address: Option<String>,
}

fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_malformed_ones_start_a_new_trace() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ids = SpanIds::parse(value).unwrap();
        assert!(ids.sampled);
        assert_eq!(ids.header(), value);
        let child = ids.child();
        assert_eq!(child.trace_id, ids.trace_id);
        assert_ne!(child.span_id, ids.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(SpanIds::parse(bad), None, "{bad:?}");
        }
        // A later version is read as 00, its extra fields ignored.
        assert!(
            SpanIds::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x").is_some()
        );
        let continued = RequestTrace::new(Some(ids));
        assert_eq!(continued.parent, Some(ids.span_id));
        assert_eq!(continued.server.trace_id, ids.trace_id);
        assert!(RequestTrace::new(None).server.sampled);
    }
}
