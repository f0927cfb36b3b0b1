//! Google's endpoints and credentials, shared by the Gemini dialect (on the Gemini API and on
//! Vertex AI) and the Vertex dialect: base URLs, model ids in URL paths, Vertex's regional model
//! URLs by publisher, and the service account's bearer token.

use std::sync::LazyLock;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, StatusCode, header};
use modelgate_crds::compiled::CompiledDeployment;

use super::{
    CallError, HttpClient, Target,
    google_auth::{HttpTokenEndpoint, TokenCache},
    transport,
};

/// The provider name Vertex's errors carry.
pub const VERTEX: &str = "vertex";

/// Vertex's default API version (`v1beta1` has previews; a deployment's `apiVersion` picks it).
const API_VERSION: &str = "v1";

/// Access tokens of every Vertex deployment's service account, shared by all requests.
pub static TOKENS: LazyLock<TokenCache> = LazyLock::new(TokenCache::default);

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

/// A deployment's `baseUrl` as the origin (and path prefix) the API version follows: a trailing
/// `/` or a trailing `/{version}` (copied from a full URL) would otherwise be doubled.
pub fn base_url<'a>(base: &'a str, version: &str) -> &'a str {
    let base = base.trim_end_matches('/');
    base.strip_suffix(version)
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or(base)
}

/// The model id goes into the URL path: `gemini-2.5-flash`, `claude-sonnet-4-5@20250929`, never
/// anything that could start another path segment or a query. A deployment's model outside
/// that is a configuration error, refused before anything is sent.
pub fn check_model_id(provider: &str, model: &str) -> Result<(), CallError> {
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b':' | b'-');
    if !model.is_empty() && model.bytes().all(allowed) {
        return Ok(());
    }
    Err(CallError::invalid_request(format!(
        "{provider}: the deployment's model has characters a model id cannot have (letters, \
         digits, `.`, `_`, `@`, `:` and `-` only)"
    )))
}

/// The URL of `method` on a model of `publisher`.
pub fn model_url(
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
    check_model_id(VERTEX, model)?;
    let version = deployment.api_version.as_deref().unwrap_or(API_VERSION);
    let base = match (&deployment.base_url, region) {
        (Some(base), _) => base_url(base, version).to_owned(),
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
