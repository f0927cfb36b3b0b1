//! The providers' native wire formats. Each dialect reads its provider's request, decides the
//! answer with the same rules as the OpenAI one (`reply::answer`: echo the user, call the first
//! tool, JSON in JSON mode), and writes it in its provider's format, streams and errors included.
//! Which dialect answers is decided by the request path, as at the real providers.

mod anthropic;
mod azure;
mod bedrock;
mod cohere;
mod deepseek;
mod gemini;
mod gemini_request;
mod google_token;
mod mistral;
mod openai;
mod responses;

pub use bedrock::{
    ACCESS_KEY_ID as BEDROCK_ACCESS_KEY_ID, SECRET_ACCESS_KEY as BEDROCK_SECRET_ACCESS_KEY,
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

/// One request, as a dialect sees it.
pub struct Req<'a> {
    pub path: &'a str,
    /// The query string, without `?` (empty when there is none).
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The body as JSON (a string when it was not JSON).
    pub body: &'a Value,
    pub raw: &'a [u8],
}

impl Req<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the request asks for a streamed answer in the OpenAI way (`"stream": true`).
    pub fn stream_flag(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// The body, when it is JSON (`body` holds a body that is not as a string, which a JSON
    /// string body would be too).
    pub fn json(&self) -> Option<&Value> {
        serde_json::from_slice::<serde::de::IgnoredAny>(self.raw)
            .is_ok()
            .then_some(self.body)
    }

    /// The key of an `Authorization: Bearer <key>` header.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?
            .strip_prefix("Bearer ")
            .filter(|key| !key.trim().is_empty())
    }
}

/// A dialect's answer.
pub enum Reply {
    Json {
        status: StatusCode,
        body: Value,
        headers: Vec<(&'static str, String)>,
    },
    /// A stream: every frame already framed (SSE text or binary event-stream messages), ending
    /// with the provider's last event; `error` is the frame a provider sends when it fails
    /// mid-stream.
    Stream {
        content_type: &'static str,
        frames: Vec<Bytes>,
        error: Bytes,
    },
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self::Json {
            status,
            body,
            headers: Vec::new(),
        }
    }
}

/// A provider's wire format.
pub struct Dialect {
    pub name: &'static str,
    /// Whether a request path belongs to this provider.
    pub matches: fn(&str) -> bool,
    /// The normal answer to a request.
    pub reply: fn(&Req<'_>) -> Reply,
    /// The provider's error answer for `status` (bodies and headers as the provider sends them).
    pub error: fn(u16) -> Reply,
}

/// Every dialect, most specific paths first; OpenAI's is the fallback. Mistral and DeepSeek
/// speak OpenAI's paths, so the fake serves them under `/mistral/` and `/deepseek/`.
static DIALECTS: &[&Dialect] = &[
    &responses::DIALECT,
    &anthropic::DIALECT,
    &bedrock::DIALECT,
    &gemini::DIALECT,
    &cohere::DIALECT,
    &azure::DIALECT,
    &mistral::DIALECT,
    &deepseek::DIALECT,
    &openai::DIALECT,
];

/// The dialect serving `path`.
pub fn for_path(path: &str) -> &'static Dialect {
    DIALECTS
        .iter()
        .copied()
        .find(|d| (d.matches)(path))
        .unwrap_or(&openai::DIALECT)
}

/// Requests that are not model calls (an OAuth token endpoint): answered directly and never
/// scripted, so a test's scripts reach the model calls they are meant for. They are recorded.
pub fn unscripted(req: &Req<'_>) -> Option<Reply> {
    (req.path == google_token::PATH).then(|| google_token::answer(req))
}

/// `data: <json>\n\n`.
pub fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// `event: <name>\ndata: <json>\n\n`.
pub fn sse_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// A dialect's answer to one request built from its parts, for the dialects' own tests.
#[cfg(test)]
pub fn answer_to(
    reply: fn(&Req<'_>) -> Reply,
    path: &str,
    query: &str,
    headers: &[(&'static str, &str)],
    body: &Value,
) -> Reply {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            map.insert(*name, value);
        }
    }
    let raw = body.to_string();
    reply(&Req {
        path,
        query,
        headers: &map,
        body,
        raw: raw.as_bytes(),
    })
}
