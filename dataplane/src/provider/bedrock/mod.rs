//! AWS Bedrock Runtime: chat over Converse (`/model/{id}/converse`) and ConverseStream
//! (`/converse-stream`, answered in binary event-stream frames), embeddings over InvokeModel
//! (`/invoke`, Titan and Cohere formats). Requests are signed with SigV4 when the deployment
//! has AWS keys, or carry a Bedrock API key as a bearer token.

mod embeddings;
mod error;
pub(super) mod eventstream;
#[cfg(test)]
mod over_http;
mod request;
mod response;
mod sigv4;
mod stream;

use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use modelgate_crds::compiled::CompiledDeployment;

use super::{
    CallError, CallErrorKind, Endpoint, HttpClient, Target,
    translated::{Dialect, StreamTranslator, Translated},
    transport,
};

/// The provider's name, in messages.
const NAME: &str = "bedrock";

/// The content type of ConverseStream answers.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

pub struct Bedrock;

impl Dialect for Bedrock {
    fn name(&self) -> &'static str {
        NAME
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        let (operation, body, accept) = match target.endpoint {
            Endpoint::ChatCompletions if target.stream => {
                ("converse-stream", request::converse(target)?, EVENT_STREAM)
            }
            Endpoint::ChatCompletions => {
                ("converse", request::converse(target)?, "application/json")
            }
            Endpoint::Embeddings => ("invoke", embeddings::request(target)?, "application/json"),
            Endpoint::ImageGenerations => {
                return Err(CallError::unsupported(format!(
                    "image generation is not supported by provider {NAME}"
                )));
            }
        };
        let url = url(target.deployment, operation)?;
        transport::with_body(
            transport::json_post(&url, false)
                .header(header::ACCEPT, HeaderValue::from_static(accept)),
            Bytes::from(body),
        )
    }

    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        _http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let deployment = target.deployment;
            if let Some(aws) = &deployment.aws {
                // Signed last: the signature covers the final URL, headers and body.
                sigv4::sign(request, aws, region(deployment)?, SystemTime::now())
            } else {
                transport::api_key_header(deployment, request, header::AUTHORIZATION, "Bearer ")
            }
        })
    }

    fn response(
        &self,
        target: &Target<'_>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Translated, CallError> {
        let body = &body[..];
        match target.endpoint {
            Endpoint::Embeddings => embeddings::response(target, headers, body),
            _ => response::completion(target, body),
        }
    }

    fn embedding_batch(&self, target: &Target<'_>) -> Option<usize> {
        Some(embeddings::batch_limit(&target.deployment.model))
    }

    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        Some(Box::new(stream::ConverseStream::new(
            &target.deployment.model,
        )))
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        error::from_response(status, headers, body)
    }
}

/// `{origin}/model/{model id}/{operation}`: the regional endpoint, or the deployment's
/// `base_url` in its place.
fn url(deployment: &CompiledDeployment, operation: &str) -> Result<String, CallError> {
    let model = path_segment(&deployment.model);
    Ok(match &deployment.base_url {
        Some(base) => format!("{}/model/{model}/{operation}", base.trim_end_matches('/')),
        None => format!(
            "https://bedrock-runtime.{}.amazonaws.com/model/{model}/{operation}",
            region(deployment)?
        ),
    })
}

fn region(deployment: &CompiledDeployment) -> Result<&str, CallError> {
    deployment.region.as_deref().ok_or_else(|| {
        CallError::new(
            CallErrorKind::Connect,
            "the bedrock deployment has no region",
        )
    })
}

/// A model id as one path segment: everything but RFC 3986's unreserved characters
/// percent-encoded, so `:` is `%3A` and an ARN's `/` is `%2F`, as the AWS SDKs send them.
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 8);
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Event-stream frames for the conformance fixtures: each event is `{"headers": {...},
/// "payload": {...}}` (a string payload is sent as is), or `{"hex": "..."}` for exact bytes.
#[cfg(test)]
pub(super) fn event_frames(events: &[serde_json::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        if let Some(hex) = event.get("hex").and_then(serde_json::Value::as_str) {
            out.extend(hex::decode(hex).unwrap_or_else(|e| panic!("bad hex frame: {e}")));
            continue;
        }
        let headers: Vec<(&str, &str)> = event["headers"]
            .as_object()
            .map(|headers| {
                headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let payload = match &event["payload"] {
            serde_json::Value::String(raw) => raw.clone().into_bytes(),
            payload => payload.to_string().into_bytes(),
        };
        out.extend(eventstream::encode(&headers, &payload));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(settings: serde_json::Value) -> CompiledDeployment {
        let mut base = serde_json::json!({
            "id": "ns/group/d", "name": "d", "provider": "bedrock",
            "model": "anthropic.claude-3-5-haiku-20241022-v1:0", "weight": 1, "tags": [],
            "timeouts": {}, "region": "eu-west-3",
        });
        for (k, v) in settings.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn urls_carry_the_model_id_encoded_once() {
        assert_eq!(
            url(&deployment(serde_json::json!({})), "converse").unwrap(),
            "https://bedrock-runtime.eu-west-3.amazonaws.com/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
        );
        let arn = deployment(serde_json::json!({
            "model": "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "baseUrl": "http://127.0.0.1:9/",
        }));
        assert_eq!(
            url(&arn, "converse-stream").unwrap(),
            "http://127.0.0.1:9/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
        );
        let no_region = deployment(serde_json::json!({"region": null}));
        assert_eq!(
            url(&no_region, "converse").unwrap_err().kind,
            CallErrorKind::Connect
        );
    }
}
