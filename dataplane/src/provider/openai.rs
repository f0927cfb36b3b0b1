//! OpenAI, every OpenAI-compatible server, and Azure OpenAI: the client's body is forwarded as
//! received, with only `model` replaced and modelgate's own extension removed; answers pass
//! through untouched. Azure differs only in its URLs, its `api-key` header and the empty
//! prompt-filter chunk it opens streams with, which is taken out.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, Request, StatusCode, header};
use modelgate_crds::compiled::CompiledDeployment;
use serde::Deserialize;

use super::{
    CallError, CallErrorKind, Endpoint, HttpClient, Target, Usage,
    translated::{Dialect, StreamTranslator, Translated},
    transport,
};

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The Azure OpenAI GA version used when a deployment names none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// Which OpenAI-format service a deployment talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Azure,
}

pub struct OpenAi(pub Flavor);

impl Dialect for OpenAi {
    fn name(&self) -> &'static str {
        match self.0 {
            Flavor::OpenAi => "openai",
            Flavor::Azure => "azure",
        }
    }

    fn request(&self, target: &Target<'_>) -> Result<Request<Bytes>, CallError> {
        let url = url(self.0, target.deployment, target.endpoint);
        let body = target
            .request
            .forward(&target.deployment.model, target.stream);
        transport::json_post(&url, target.stream)
            .body(body)
            .map_err(|e| CallError::new(CallErrorKind::Connect, format!("bad upstream URL: {e}")))
    }

    fn authorize<'a>(
        &'a self,
        target: &'a Target<'a>,
        _http: &'a HttpClient,
        request: &'a mut Request<Bytes>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            if let Some(key) = &target.deployment.api_key {
                let (name, value) = match self.0 {
                    Flavor::OpenAi => (
                        header::AUTHORIZATION,
                        transport::secret_header(&format!("Bearer {}", key.expose()))?,
                    ),
                    Flavor::Azure => (
                        HeaderName::from_static("api-key"),
                        transport::secret_header(key.expose())?,
                    ),
                };
                request.headers_mut().insert(name, value);
            }
            Ok(())
        })
    }

    fn response(&self, _target: &Target<'_>, body: &[u8]) -> Result<Translated, CallError> {
        // One parse both validates the body (a broken answer is a failed attempt, never
        // something to hand a client) and reads the usage.
        let usage = serde_json::from_slice::<WithUsage>(body)
            .map_err(|e| {
                CallError::new(
                    CallErrorKind::Protocol,
                    format!("the response is not valid JSON: {e}"),
                )
            })?
            .usage;
        Ok(Translated {
            body: Bytes::copy_from_slice(body),
            usage,
        })
    }

    fn stream(&self, _target: &Target<'_>) -> Option<Box<dyn StreamTranslator>> {
        match self.0 {
            Flavor::OpenAi => None,
            Flavor::Azure => Some(Box::new(AzureStream::default())),
        }
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
        error(status, headers, body)
    }
}

/// The upstream URL of `endpoint` at `deployment`.
fn url(flavor: Flavor, deployment: &CompiledDeployment, endpoint: Endpoint) -> String {
    let base = deployment.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
    match flavor {
        Flavor::OpenAi => format!("{base}{}", endpoint.openai_path()),
        Flavor::Azure => match deployment.api_version.as_deref() {
            Some("v1") => format!("{base}/openai/v1{}", endpoint.openai_path()),
            version => format!(
                "{base}/openai/deployments/{}{}?api-version={}",
                deployment.model,
                endpoint.openai_path(),
                version.unwrap_or(AZURE_DEFAULT_API_VERSION)
            ),
        },
    }
}

/// An OpenAI-shaped error answer: status, Retry-After, and for the caller's own mistakes the
/// provider's code and message (other errors, auth above all, may quote our credential).
pub fn error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
    let mut error = CallError::status(status, headers, None, format!("upstream answered {status}"));
    if error.is_client_error()
        && let Some((code, message)) = upstream_error(body)
    {
        error.provider_code = code;
        error.message = message;
    }
    error
}

/// Takes Azure's opening prompt-filter chunk (`choices: []`, empty `id`) out of a stream: strict
/// OpenAI clients read `choices[0]` of every chunk.
#[derive(Default)]
struct AzureStream {
    line: Vec<u8>,
}

impl StreamTranslator for AzureStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CallError> {
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..=newline]);
            if !is_prompt_filter_chunk(&self.line) {
                out.extend_from_slice(&self.line);
            }
            self.line.clear();
            rest = &rest[newline + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CallError> {
        out.append(&mut self.line);
        Ok(())
    }
}

fn is_prompt_filter_chunk(line: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        id: String,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    let Some(data) = line.trim_ascii().strip_prefix(b"data:") else {
        return false;
    };
    data.windows(21).any(|w| w == b"prompt_filter_results")
        && serde_json::from_slice::<Chunk>(data.trim_ascii())
            .is_ok_and(|c| c.choices.is_empty() && c.id.is_empty() && c.usage.is_none())
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// The provider's code and message from an OpenAI error body.
fn upstream_error(body: &[u8]) -> Option<(Option<String>, String)> {
    let envelope = serde_json::from_slice::<ErrorEnvelope>(body).ok()?;
    let code = envelope
        .error
        .code
        .and_then(|c| c.as_str().map(str::to_owned));
    Some((code, envelope.error.message?))
}
