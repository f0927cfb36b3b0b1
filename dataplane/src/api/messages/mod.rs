//! The Anthropic Messages front door: `POST /v1/messages` and `POST /v1/messages/count_tokens`,
//! what Claude Code and the Anthropic SDKs speak. A request runs through the same pipeline as a
//! chat completion (its translation); a deployment that speaks Messages gets the original and
//! its answer comes back untouched, any other deployment's answer is translated back here.

mod error;
mod request;
pub(super) use request::to_chat as translate;
mod response;
mod stream;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

use super::{
    Api, body,
    door::{self, Door, StreamTranslation, json_response},
};
use crate::{
    auth,
    error::ApiError,
    pipeline,
    request::{Endpoint, JsonRequest, Native, NativeApi, Parsed},
    server::ResponseBody,
};

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Headers a deployment that speaks Messages gets as the client sent them.
const FORWARDED: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// The caller's key: `x-api-key` (the Anthropic SDKs), else `Authorization: Bearer`.
fn credential(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or_else(|| auth::bearer(headers))
}

pub async fn handle(api: &Api, request: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, incoming) = request.into_parts();
    let intake = async {
        let bytes = body::read(incoming, &parts.headers, &api.intake).await?;
        intake(bytes, &parts.headers)
    };
    let credential = credential(&parts.headers);
    match pipeline::run(&api.services, Endpoint::ChatCompletions, credential, intake).await {
        Ok(answer) => door::respond::<Messages>(answer),
        Err(rejected) => door::rejection::<Messages>(rejected),
    }
}

fn intake(bytes: Bytes, headers: &HeaderMap) -> Result<Parsed, ApiError> {
    let original = JsonRequest::parse(bytes.clone())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(ApiError::invalid_json)?;
    if !value["model"].is_string() {
        return Err(ApiError::invalid_request("`model` is required.").with_param("model"));
    }
    let (chat, untranslatable) = request::to_chat(&value)?;
    let mut forwarded = HeaderMap::new();
    for name in FORWARDED {
        for value in headers.get_all(name) {
            forwarded.append(HeaderName::from_static(name), value.clone());
        }
    }
    let native = Native {
        api: NativeApi::Messages,
        body: original,
        headers: forwarded,
        untranslatable,
    };
    Parsed::translated(native, Bytes::from(chat.to_string()), headers)
}

/// `count_tokens`: the key is checked, the count estimated at four bytes of JSON a token (the
/// gateway has no tokenizer; the same estimate reserves budgets), never an upstream call.
pub async fn count_tokens(api: &Api, request: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, incoming) = request.into_parts();
    let Some(snapshot) = api.services.config.current() else {
        return error_response(&ApiError::not_ready(), HeaderMap::new());
    };
    if let Err(error) = auth::authenticate(
        &snapshot,
        credential(&parts.headers),
        jiff::Timestamp::now().as_second(),
    ) {
        return error_response(&error, HeaderMap::new());
    }
    let counted = async {
        let bytes = body::read(incoming, &parts.headers, &api.intake).await?;
        let body = JsonRequest::parse(bytes)?;
        let counted: usize = ["system", "messages", "tools"]
            .iter()
            .filter_map(|member| body.raw(member))
            .map(<[u8]>::len)
            .sum();
        Ok::<_, ApiError>(counted.div_ceil(4))
    };
    match counted.await {
        Ok(tokens) => json_response(
            Bytes::from(serde_json::json!({"input_tokens": tokens}).to_string()),
            HeaderMap::new(),
        ),
        Err(error) => error_response(&error, HeaderMap::new()),
    }
}

/// The Messages API as a front door.
pub struct Messages;

impl Door for Messages {
    type Stream = stream::ToMessages;

    fn complete(completion: &Value) -> Value {
        response::to_message(completion)
    }

    fn error_event(error: &ApiError) -> Vec<u8> {
        stream::error_event(error)
    }

    fn error_body(error: &ApiError) -> Bytes {
        error::body(error)
    }
}

impl StreamTranslation for stream::ToMessages {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        stream::ToMessages::feed(self, bytes, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        stream::ToMessages::finish(self, out);
    }
}

/// Anthropic's error body with the error's status and the given headers.
pub fn error_response(error: &ApiError, headers: HeaderMap) -> Response<ResponseBody> {
    door::error_response::<Messages>(error, headers)
}
