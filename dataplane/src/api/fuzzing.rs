//! Entry points for the fuzz targets (`fuzz/`): the request intake of every front door and the
//! translations of answers back into the Messages and Responses APIs, fed arbitrary bytes. Not
//! an API: whatever they are given, they must not panic.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::request::{Endpoint, JsonRequest, Native, NativeApi, Parsed};

/// Headers from `data`'s lines (`name: value`), as a client could send them.
fn headers(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// One request through the intake of the door `door` picks: `head` as its headers, `body` as
/// its body.
pub fn intake(door: u8, head: &[u8], body: &[u8]) {
    let headers = headers(head);
    let body = Bytes::copy_from_slice(body);
    match door % 5 {
        0 => drop(Parsed::openai(Endpoint::ChatCompletions, body, &headers)),
        1 => drop(Parsed::openai(Endpoint::Embeddings, body, &headers)),
        2 => drop(Parsed::openai(Endpoint::ImageGenerations, body, &headers)),
        3 => drop(native(NativeApi::Messages, body, &headers)),
        _ => drop(native(NativeApi::Responses, body, &headers)),
    }
}

fn native(api: NativeApi, body: Bytes, headers: &HeaderMap) -> Option<Parsed> {
    let original = JsonRequest::parse(body.clone()).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let (chat, untranslatable) = match api {
        NativeApi::Messages => super::messages::translate(&value).ok()?,
        NativeApi::Responses => super::responses::translate(&value).ok()?,
    };
    let native = Native {
        api,
        body: original,
        headers: HeaderMap::new(),
        untranslatable,
    };
    Parsed::translated(native, Bytes::from(chat.to_string()), headers).ok()
}

/// Chat SSE bytes (arbitrary) through the Messages and Responses stream translations, split at
/// `split`.
pub fn answer_streams(split: usize, data: &[u8]) {
    let split = split.min(data.len());
    let mut out = Vec::new();
    let mut messages = <super::messages::Messages as super::door::Door>::Stream::default();
    let mut responses = <super::responses::Responses as super::door::Door>::Stream::default();
    for chunk in [&data[..split], &data[split..]] {
        messages.feed(chunk, &mut out);
        responses.feed(chunk, &mut out);
    }
    messages.finish(&mut out);
    responses.finish(&mut out);
}
