//! AWS Bedrock Runtime: Converse (`/model/{id}/converse`), ConverseStream (`/converse-stream`,
//! binary event-stream frames) and InvokeModel embeddings (`/invoke`, Titan and Cohere).
//! Requests must carry a Bedrock API key (`Authorization: Bearer ...`) or a SigV4 signature by
//! the fake's test key, which is verified. Errors name their exception in `x-amzn-ErrorType`.

mod answer;
mod converse;
mod embeddings;
mod frames;
mod sigv4;

use http::StatusCode;
use serde_json::json;

use super::{Dialect, Reply, Req};

pub use sigv4::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};

pub static DIALECT: Dialect = Dialect {
    name: "bedrock",
    matches: |path| operation_path(path).is_some(),
    reply: answer,
    error: |status| error(status, None),
};

/// `{model id}/{operation}` of a Bedrock path. Bedrock serves at the root; `/v1/model/...` is
/// also taken, so a deployment pointed at the fake's OpenAI base URL reaches it too.
fn operation_path(path: &str) -> Option<&str> {
    path.strip_prefix("/model/")
        .or_else(|| path.strip_prefix("/v1/model/"))
}

fn answer(req: &Req<'_>) -> Reply {
    if let Err((exception, message)) = authenticate(req) {
        return exception_reply(StatusCode::FORBIDDEN, exception, &message);
    }
    let Some((model, operation)) = operation_path(req.path).and_then(|rest| rest.rsplit_once('/'))
    else {
        return not_found();
    };
    match operation {
        "converse" | "converse-stream" => match converse::read(req.body) {
            Ok(openai) if operation == "converse" => answer::complete(&openai, req.body),
            Ok(openai) => answer::stream(&openai, req.body),
            Err(message) => validation(&message),
        },
        "invoke" => {
            embeddings::invoke(model, req.body).unwrap_or_else(|message| validation(&message))
        }
        _ => not_found(),
    }
}

/// A bearer API key, or a SigV4 signature the fake can verify.
fn authenticate(req: &Req<'_>) -> Result<(), sigv4::Refusal> {
    match req.header("authorization") {
        Some(value) if value.starts_with("AWS4-HMAC-SHA256 ") => sigv4::verify(req, value),
        Some(value) => match value.strip_prefix("Bearer ") {
            Some(key) if !key.trim().is_empty() => Ok(()),
            _ => Err((
                "UnrecognizedClientException",
                "Invalid API Key format: Must start with pre-defined prefix".to_owned(),
            )),
        },
        None => Err((
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".to_owned(),
        )),
    }
}

/// The error answer for `status`, with its exception name.
fn error(status: u16, message: Option<&str>) -> Reply {
    let (status, exception) = match status {
        400 => (StatusCode::BAD_REQUEST, "ValidationException"),
        401 | 403 => (StatusCode::FORBIDDEN, "AccessDeniedException"),
        404 => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
        408 => (StatusCode::REQUEST_TIMEOUT, "ModelTimeoutException"),
        424 => (StatusCode::FAILED_DEPENDENCY, "ModelErrorException"),
        429 => (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException"),
        503 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
        ),
        other => (
            StatusCode::from_u16(other).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "InternalServerException",
        ),
    };
    let message = message
        .map(str::to_owned)
        .unwrap_or_else(|| format!("fake-provider scripted status {}", status.as_u16()));
    exception_reply(status, exception, &message)
}

fn exception_reply(status: StatusCode, exception: &str, message: &str) -> Reply {
    Reply::Json {
        status,
        body: json!({ "message": message }),
        headers: vec![
            (
                "x-amzn-errortype",
                format!("{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            ),
            ("x-amzn-requestid", "fake-request-id".to_owned()),
        ],
    }
}

fn validation(message: &str) -> Reply {
    error(400, Some(message))
}

fn not_found() -> Reply {
    exception_reply(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "fake-provider: no such Bedrock operation",
    )
}
