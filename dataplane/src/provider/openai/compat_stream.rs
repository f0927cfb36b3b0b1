//! Mistral's and DeepSeek's chunk streams, normalised chunk by chunk (see `compat`), with the
//! usage moved to where OpenAI puts it: Mistral (and DeepSeek at times) reports it on the chunk
//! that carries the finish reason, while the gateway reads it from a `choices: []` chunk right
//! before `[DONE]` and takes that chunk out for clients that did not ask for usage. SSE comments
//! (DeepSeek's `: keep-alive`) are dropped; a stream that ends before `[DONE]` fails.

use serde_json::{Map, Value};

use super::{
    super::{
        CallError,
        translated::{StreamTranslator, cut_short, malformed},
    },
    compat::{choice_normalised, stream_failed, usage_normalised},
};
use crate::sse::{EventError, Events};

/// Largest single event (a whole tool call's arguments can be in one).
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

pub struct CompatStream {
    events: Events,
    chunks: Chunks,
}

/// What the events have said so far.
struct Chunks {
    provider: &'static str,
    /// The latest usage report, as its own chunk, written just before `[DONE]`.
    usage: Option<Value>,
    done: bool,
}

impl CompatStream {
    pub fn new(provider: &'static str) -> Self {
        Self {
            events: Events::new(MAX_EVENT_BYTES),
            chunks: Chunks {
                provider,
                usage: None,
                done: false,
            },
        }
    }

    fn decoded(&self, result: Result<(), EventError<CallError>>) -> Result<(), CallError> {
        result.map_err(|e| match e {
            EventError::TooLong => malformed(self.chunks.provider, "an event is too large"),
            EventError::Handler(e) => e,
        })
    }
}

impl StreamTranslator for CompatStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CallError> {
        let chunks = &mut self.chunks;
        let result = self
            .events
            .push(bytes, |event| chunks.data(event.data, out));
        self.decoded(result)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CallError> {
        let chunks = &mut self.chunks;
        let result = self.events.finish(|event| chunks.data(event.data, out));
        self.decoded(result)?;
        if self.chunks.done {
            Ok(())
        } else {
            Err(cut_short(self.chunks.provider))
        }
    }
}

impl Chunks {
    fn data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CallError> {
        if self.done {
            return Ok(());
        }
        if data == b"[DONE]" {
            if let Some(usage) = self.usage.take() {
                write(out, &usage);
            }
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.done = true;
            return Ok(());
        }
        let mut chunk: Value = serde_json::from_slice(data)
            .map_err(|e| malformed(self.provider, format!("a chunk is not JSON: {e}")))?;
        let Some(fields) = chunk.as_object_mut() else {
            return Err(malformed(self.provider, "a chunk is not a JSON object"));
        };
        if fields.contains_key("error") || fields.get("object").is_some_and(|o| o == "error") {
            return Err(stream_failed(self.provider));
        }
        let mut changed = false;
        if let Some(Value::Array(choices)) = fields.get_mut("choices") {
            for choice in choices {
                changed |= choice_normalised(self.provider, choice, "delta")?;
            }
        }
        if fields.get("usage").is_some_and(|u| !u.is_null()) {
            let has_choices = fields
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty());
            if !has_choices {
                // Already OpenAI's usage chunk: it goes out once, before `[DONE]`.
                if let Some(usage) = fields.get_mut("usage") {
                    usage_normalised(usage);
                }
                self.usage = Some(chunk);
                return Ok(());
            }
            if let Some(mut usage) = fields.remove("usage") {
                usage_normalised(&mut usage);
                self.usage = Some(usage_chunk(fields, usage));
                changed = true;
            }
        }
        if changed {
            write(out, &chunk);
        } else {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\n\n");
        }
        Ok(())
    }
}

/// A `choices: []` chunk carrying `usage`, with the id, model and clock of `chunk`.
fn usage_chunk(chunk: &Map<String, Value>, usage: Value) -> Value {
    let mut fields = Map::new();
    for key in ["id", "object", "created", "model", "system_fingerprint"] {
        if let Some(value) = chunk.get(key) {
            fields.insert(key.to_owned(), value.clone());
        }
    }
    fields.insert("choices".to_owned(), Value::Array(Vec::new()));
    fields.insert("usage".to_owned(), usage);
    Value::Object(fields)
}

fn write(out: &mut Vec<u8>, chunk: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing a JSON value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, chunk);
    out.extend_from_slice(b"\n\n");
}
