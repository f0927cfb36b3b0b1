//! Vertex AI: regional URLs, the service-account bearer token, and the publisher a model belongs
//! to. Google's own models (Gemini) speak the Gemini dialect; Claude (a model named `claude...`)
//! speaks Anthropic's Messages body through `rawPredict` (`claude.rs`). The deployment's
//! `api_key` holds the whole service-account key JSON, exchanged for access tokens by
//! `google_auth`; a token Vertex refuses with a 401 is dropped from the cache.

mod claude;

use std::sync::LazyLock;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, StatusCode, header};
use modelgate_crds::compiled::CompiledDeployment;
use tokio::time::Instant;

use super::{
    CallError, HttpClient, Target, anthropic,
    gemini::{self, Flavor, Gemini},
    google_auth::{HttpTokenEndpoint, TokenCache},
    translated::{Dialect, StreamTranslator, Translated},
    transport,
};

const NAME: &str = "vertex";

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
            Publisher::Anthropic => claude::request(target),
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
            Publisher::Anthropic => claude::response(target, &body),
        }
    }

    fn embedding_batch(&self, target: &Target<'_>) -> Option<usize> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.embedding_batch(target),
            Publisher::Anthropic => None,
        }
    }

    fn stream(&self, target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        match Publisher::of(&target.deployment.model) {
            Publisher::Google => GOOGLE.stream(target),
            Publisher::Anthropic => Some(claude::stream(target)),
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

    /// A 401 means the token was refused (revoked, or its account disabled): the next request
    /// fetches a new one rather than sending this one for the rest of its hour.
    fn refused(&self, target: &Target<'_>, status: StatusCode, authorized_at: Instant) {
        if status == StatusCode::UNAUTHORIZED
            && let Some(key) = &target.deployment.api_key
        {
            TOKENS.evict(key.expose(), authorized_at);
        }
    }
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
    // A compiled config always has both; without them there is no URL to send to, and the
    // request cannot be served as configured.
    let (Some(region), Some(project)) = (
        deployment.region.as_deref().filter(|r| is_name(r)),
        deployment.project.as_deref().filter(|p| is_name(p)),
    ) else {
        return Err(CallError::invalid_request(
            "vertex: the deployment's configuration needs a `region` and a `project` \
             (letters, digits, `-` and `_`)",
        ));
    };
    gemini::check_model_id(NAME, model)?;
    let version = deployment.api_version.as_deref().unwrap_or(API_VERSION);
    let base = match (&deployment.base_url, region) {
        (Some(base), _) => gemini::base_url(base, version).to_owned(),
        (None, "global") => "https://aiplatform.googleapis.com".to_owned(),
        (None, region) => format!("https://{region}-aiplatform.googleapis.com"),
    };
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
            .bearer(key.expose(), &HttpTokenEndpoint(http.clone()))
            .await?;
        request.headers_mut().insert(
            header::AUTHORIZATION,
            transport::secret_header(&format!("Bearer {token}"))?,
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(settings: serde_json::Value) -> CompiledDeployment {
        let mut base = serde_json::json!({
            "id": "ns/group/d", "name": "d", "provider": "vertex", "model": "m",
            "region": "us-east5", "project": "p-1", "weight": 1, "tags": [], "timeouts": {},
        });
        for (key, value) in settings.as_object().cloned().unwrap_or_default() {
            base[key] = value;
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_model_id_with_characters_outside_a_path_segment_is_refused() {
        let plain = deployment(serde_json::json!({}));
        let url = model_url(
            &plain,
            Publisher::Anthropic,
            "claude-sonnet-4-5@20250929",
            "rawPredict",
        );
        assert!(
            url.unwrap()
                .ends_with("/models/claude-sonnet-4-5@20250929:rawPredict")
        );
        for bad in ["claude/../../x", "claude?alt=1", "claude#x", "claude x", ""] {
            let refused = model_url(&plain, Publisher::Anthropic, bad, "rawPredict").unwrap_err();
            assert_eq!(
                refused.class(),
                crate::provider::ErrorClass::InvalidRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_base_url_ending_in_the_version_or_a_slash_is_not_doubled() {
        for base in [
            "http://127.0.0.1:9",
            "http://127.0.0.1:9/",
            "http://127.0.0.1:9/v1",
            "http://127.0.0.1:9/v1/",
        ] {
            let url = model_url(
                &deployment(serde_json::json!({"baseUrl": base})),
                Publisher::Google,
                "gemini-2.5-flash",
                "generateContent",
            )
            .unwrap();
            assert_eq!(
                url,
                "http://127.0.0.1:9/v1/projects/p-1/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent",
                "{base}"
            );
        }
    }

    #[test]
    fn a_missing_region_or_project_is_a_clear_configuration_error() {
        let no_project = deployment(serde_json::json!({"project": null}));
        let error = model_url(&no_project, Publisher::Google, "g", "generateContent").unwrap_err();
        assert_eq!(error.class(), crate::provider::ErrorClass::InvalidRequest);
        assert!(error.message.contains("`project`"), "{}", error.message);
    }
}
