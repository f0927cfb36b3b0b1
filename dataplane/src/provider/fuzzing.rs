//! Entry points for the fuzz targets (`fuzz/`): every provider's stream translator and the
//! Bedrock event-stream decoder, fed arbitrary bytes. Not an API: whatever they are given, they
//! must not panic, loop or grow without bound.

use bytes::Bytes;
use modelgate_crds::{ProviderKind, compiled::CompiledDeployment};
use serde_json::json;

use super::{Endpoint, Target, dialect};
use crate::request::JsonRequest;

/// Every provider with a wire format of its own.
pub const PROVIDERS: [ProviderKind; 9] = [
    ProviderKind::Openai,
    ProviderKind::Azure,
    ProviderKind::Anthropic,
    ProviderKind::Bedrock,
    ProviderKind::Gemini,
    ProviderKind::Vertex,
    ProviderKind::Mistral,
    ProviderKind::Deepseek,
    ProviderKind::Cohere,
];

/// Feeds `data` to the stream translator of `provider`, in two chunks split at `split`, with
/// JSON mode on or off, then ends the stream.
pub fn stream(provider: ProviderKind, json_mode: bool, split: usize, data: &[u8]) {
    let Some(dialect) = dialect(provider) else {
        return;
    };
    let mut body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    if json_mode {
        body["response_format"] = json!({"type": "json_object"});
    }
    let Ok(request) = JsonRequest::parse(Bytes::from(body.to_string())) else {
        return;
    };
    let Ok(deployment) = serde_json::from_value::<CompiledDeployment>(json!({
        "id": "fuzz/group/d", "name": "d", "provider": provider, "model": "claude-fuzz",
        "weight": 1, "tags": [], "timeouts": {},
    })) else {
        return;
    };
    let target = Target {
        endpoint: Endpoint::ChatCompletions,
        request: &request,
        native: None,
        stream: true,
        deployment: &deployment,
    };
    let Some(mut translator) = dialect.stream(&target) else {
        return;
    };
    let split = split.min(data.len());
    let mut out = Vec::new();
    for chunk in [&data[..split], &data[split..]] {
        if translator.feed(chunk, &mut out).is_err() {
            return;
        }
    }
    let _ = translator.finish(&mut out);
}

/// Decodes `data` as Bedrock's binary event stream, in two chunks split at `split`.
pub fn event_stream(split: usize, data: &[u8]) {
    let mut decoder = super::bedrock::eventstream::Decoder::new(1024 * 1024);
    let split = split.min(data.len());
    for chunk in [&data[..split], &data[split..]] {
        let read = decoder.push(chunk, |frame| {
            let _ = frame.string(":event-type");
            Ok::<(), ()>(())
        });
        if read.is_err() {
            return;
        }
    }
}
