//! Vertex AI: regional URLs, the service-account bearer token, and the publisher a model belongs
//! to. Google's own models (Gemini) speak the Gemini dialect; the deployment's `api_key` holds
//! the whole service-account key JSON, exchanged for access tokens by `google_auth`.

use std::sync::LazyLock;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, StatusCode, header};
use modelgate_crds::compiled::CompiledDeployment;

use super::{
    CallError, CallErrorKind, HttpClient, Target,
    gemini::{Flavor, Gemini},
    google_auth::{HttpTokenEndpoint, TokenCache},
    translated::{Dialect, StreamTranslator, Translated},
    transport,
};

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
        "vertex"
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.request(target),
            // Missing: the Anthropic Messages translator (its own module), called with the
            // `publishers/anthropic/...:rawPredict` / `:streamRawPredict` URL, the body's
            // `anthropic_version: "vertex-2023-10-16"` and no `model` member. Until then every
            // arm below only ever sees Google's requests.
            Publisher::Anthropic => Err(CallError::unsupported(
                "Claude models on provider vertex are not supported yet; use provider anthropic",
            )
            .with_param("model")),
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

    fn response(&self, target: &Target<'_>, body: &[u8]) -> Result<Translated, CallError> {
        GOOGLE.response(target, body)
    }

    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        GOOGLE.stream(target)
    }

    /// Vertex wraps every publisher's errors in the same `google.rpc.Status`.
    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        GOOGLE.error(status, headers, body)
    }
}

/// The URL of `method` (`generateContent`, `predict`, ...) on a Google model.
pub fn google_model_url(
    deployment: &CompiledDeployment,
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
        "{base}/{version}/projects/{project}/locations/{region}/publishers/google/models/{model}:{method}"
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
