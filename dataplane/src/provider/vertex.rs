//! Vertex AI: regional URLs, the service-account bearer token, and the publisher a model belongs
//! to. Google's own models (Gemini) speak the Gemini dialect; Claude (a model named `claude...`)
//! speaks Anthropic's Messages body through `rawPredict`. The deployment's `api_key` holds the
//! whole service-account key JSON, exchanged for access tokens by `google_auth`.

use std::sync::LazyLock;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, StatusCode, header};
use modelgate_crds::compiled::CompiledDeployment;

use super::{
    CallError, CallErrorKind, Endpoint, HttpClient, Target, anthropic,
    chat::ChatRequest,
    gemini::{Flavor, Gemini},
    google_auth::{HttpTokenEndpoint, TokenCache},
    translated::{Dialect, SseStream, StreamTranslator, Translated},
    transport,
};

const NAME: &str = "vertex";
/// The `anthropic_version` Claude takes on Vertex.
const CLAUDE_VERSION: &str = "vertex-2023-10-16";

/// Vertex's default API version (`v1beta1` has previews; a deployment's `apiVersion` picks it).
const API_VERSION: &str = "v1";

/// Access tokens of every Vertex deployment's service account, shared by all requests.
static TOKENS: LazyLock<TokenCache> = LazyLock::new(TokenCache::default);

static GOOGLE: Gemini = Gemini(Flavor::Vertex);

/// Who publishes a model on Vertex, which decides its wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publisher {
    /// Gemini: `publishers/google/models/{model}:generateContent`.
    Google,
    /// Claude: `publishers/anthropic/models/{model}:rawPredict` with Anthropic's Messages body.
    Anthropic,
}

impl Publisher {
    fn path_name(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Anthropic => "anthropic",
        }
    }

    pub fn of(model: &str) -> Self {
        if model.starts_with("claude") {
            Self::Anthropic
        } else {
            Self::Google
        }
    }
}

/// Vertex AI, dispatching on the model's publisher.
pub struct Vertex;

impl Dialect for Vertex {
    fn name(&self) -> &'static str {
        NAME
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.request(target),
            Publisher::Anthropic => claude_request(target),
        }
    }

    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        authorize(target, http, request)
    }

    fn response(
        &self,
        target: &Target<'_>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Translated, CallError> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.response(target, headers, body),
            Publisher::Anthropic => {
                let json_mode = anthropic::json_mode::requested(target);
                anthropic::response::completion(&body, &target.deployment.model, json_mode, NAME)
            }
        }
    }

    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.stream(target),
            Publisher::Anthropic => Some(Box::new(SseStream::new(
                anthropic::stream::MessagesStream::new(
                    NAME,
                    anthropic::json_mode::requested(target),
                ),
                &target.deployment.model,
                NAME,
            ))),
        }
    }

    /// Vertex's own front end answers in `google.rpc.Status` (quota, auth, unknown model); a
    /// Claude model's refusals keep Anthropic's `{"type": "error", ...}` body.
    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        if is_anthropic_error(body) {
            anthropic::error::error(status, headers, body, NAME)
        } else {
            GOOGLE.error(status, headers, body)
        }
    }
}

/// Claude through `rawPredict`: Anthropic's Messages body without `model` (it is in the URL) and
/// with Vertex's `anthropic_version`.
fn claude_request(target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
    if target.endpoint != Endpoint::ChatCompletions {
        return Err(CallError::unsupported(format!(
            "Claude models on provider {NAME} serve chat completions only"
        ))
        .with_param("model"));
    }
    let chat = ChatRequest::parse(target)?;
    let envelope = anthropic::request::Envelope {
        model: None,
        anthropic_version: Some(CLAUDE_VERSION),
        stream: target.stream,
    };
    let body = anthropic::request::messages_body(&chat, envelope, NAME)?;
    let method = if target.stream {
        "streamRawPredict"
    } else {
        "rawPredict"
    };
    let url = model_url(
        target.deployment,
        Publisher::Anthropic,
        &target.deployment.model,
        method,
    )?;
    transport::with_body(transport::json_post(&url, target.stream), body)
}

fn is_anthropic_error(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Tagged>(body).is_ok_and(|t| t.kind == "error")
}

/// The URL of `method` (`generateContent`, `predict`, ...) on a Google model.
pub fn google_model_url(
    deployment: &CompiledDeployment,
    model: &str,
    method: &str,
) -> Result<String, CallError> {
    model_url(deployment, Publisher::Google, model, method)
}

/// The URL of `method` on a model of `publisher`.
fn model_url(
    deployment: &CompiledDeployment,
    publisher: Publisher,
    model: &str,
    method: &str,
) -> Result<String, CallError> {
    let (Some(region), Some(project)) = (
        deployment.region.as_deref().filter(|r| is_name(r)),
        deployment.project.as_deref().filter(|p| is_name(p)),
    ) else {
        return Err(CallError::new(
            CallErrorKind::Connect,
            "vertex: the deployment needs a `region` and a `project` (letters, digits, `-`)",
        ));
    };
    let base = match (&deployment.base_url, region) {
        (Some(base), _) => base.trim_end_matches('/').to_owned(),
        (None, "global") => "https://aiplatform.googleapis.com".to_owned(),
        (None, region) => format!("https://{region}-aiplatform.googleapis.com"),
    };
    let version = deployment.api_version.as_deref().unwrap_or(API_VERSION);
    Ok(format!(
        "{base}/{version}/projects/{project}/locations/{region}/publishers/{}/models/{model}:{method}",
        publisher.path_name()
    ))
}

/// Region and project ids go into the host and path: nothing else may.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Adds `Authorization: Bearer <token>` for the deployment's service account.
pub fn authorize<'a>(
    target: &'a Target<'a>,
    http: &'a HttpClient,
    request: &'a mut Request<Bytes>,
) -> BoxFuture<'a, Result<(), CallError>> {
    Box::pin(async move {
        let key = target.deployment.api_key.as_ref().ok_or_else(|| {
            CallError::status(
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
                None,
                "vertex: the deployment has no service-account key".to_owned(),
            )
        })?;
        let token = TOKENS
            .bearer(key.expose(), &HttpTokenEndpoint(http))
            .await?;
        request.headers_mut().insert(
            header::AUTHORIZATION,
            transport::secret_header(&format!("Bearer {token}"))?,
        );
        Ok(())
    })
}
