//! The OpenAI Responses front door: `POST /v1/responses`, what Codex and the Agents SDK speak.
//! A request runs through the same pipeline as a chat completion (its translation); OpenAI and
//! Azure deployments get the original and their answer comes back untouched, any other
//! deployment's answer is translated back here. Stateless: modelgate stores no response, so
//! `GET` and `DELETE` of one are a 404 that says so, and `previous_response_id` goes only where
//! the provider keeps responses.

mod request;
pub(super) use request::to_chat as translate;
mod response;
mod stream;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::{
    Api, body,
    door::{self, Door, StreamTranslation},
};
use crate::{
    auth,
    error::ApiError,
    pipeline,
    request::{Endpoint, JsonRequest, Native, NativeApi, Parsed},
    server::ResponseBody,
};

/// The Responses API as a front door; its errors are OpenAI's.
pub struct Responses;

impl Door for Responses {
    type Stream = stream::ToResponses;

    fn complete(completion: &Value) -> Value {
        response::to_response(completion)
    }

    fn error_event(error: &ApiError) -> Vec<u8> {
        stream::error_event(error)
    }

    fn error_body(error: &ApiError) -> Bytes {
        error.body()
    }
}

impl StreamTranslation for stream::ToResponses {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        stream::ToResponses::feed(self, bytes, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        stream::ToResponses::finish(self, out);
    }
}

/// `POST /v1/responses`, and the `/v1/responses/{id}...` routes of stored responses.
pub async fn handle(api: &Api, request: Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    if path != "/v1/responses" {
        return stored(api, &request);
    }
    if request.method() != Method::POST {
        return door::error_response::<Responses>(
            &ApiError::method_not_allowed(),
            HeaderMap::new(),
        );
    }
    let (parts, incoming) = request.into_parts();
    let intake = async {
        let bytes = body::read(incoming, &parts.headers, &api.intake).await?;
        intake(bytes, &parts.headers)
    };
    let credential = auth::bearer(&parts.headers);
    match pipeline::run(&api.services, Endpoint::ChatCompletions, credential, intake).await {
        Ok(answer) => door::respond::<Responses>(answer),
        Err(rejected) => door::rejection::<Responses>(rejected),
    }
}

fn intake(bytes: Bytes, headers: &HeaderMap) -> Result<Parsed, ApiError> {
    let original = JsonRequest::parse(bytes.clone())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(ApiError::invalid_json)?;
    if !value["model"].is_string() {
        return Err(ApiError::invalid_request("`model` is required.").with_param("model"));
    }
    let (chat, untranslatable) = request::to_chat(&value)?;
    let native = Native {
        api: NativeApi::Responses,
        body: original,
        headers: HeaderMap::new(),
        untranslatable,
    };
    Parsed::translated(native, Bytes::from(chat.to_string()), headers)
}

/// `GET`, `DELETE` and `cancel` of a stored response: modelgate stores none (a stored one lives at
/// the provider, which a later request reaches with `previous_response_id`). The key is checked
/// first, so the route says nothing to a caller without one.
fn stored(api: &Api, request: &Request<Incoming>) -> Response<ResponseBody> {
    let Some(snapshot) = api.services.config.current() else {
        return door::error_response::<Responses>(&ApiError::not_ready(), HeaderMap::new());
    };
    if let Err(error) = auth::authenticate(
        &snapshot,
        auth::bearer(request.headers()),
        jiff::Timestamp::now().as_second(),
    ) {
        return door::error_response::<Responses>(&error, HeaderMap::new());
    }
    let id = request
        .uri()
        .path()
        .trim_start_matches("/v1/responses/")
        .split('/')
        .next()
        .unwrap_or_default();
    door::error_response::<Responses>(&response_not_stored(id), HeaderMap::new())
}

fn response_not_stored(id: &str) -> ApiError {
    let mut error = ApiError::not_found_route();
    error.status = StatusCode::NOT_FOUND;
    error.code = "response_not_stored";
    error.message = format!(
        "Response {id:?} is not stored by modelgate: requests through it are stateless. Continue a conversation by sending its items again, or with previous_response_id to an OpenAI or Azure deployment, which keeps it."
    );
    error
}
