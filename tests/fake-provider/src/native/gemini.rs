//! Google's Gemini models in their native format: the Gemini API
//! (`/v1beta/models/{model}:{method}`, an `x-goog-api-key`) and Vertex AI's Google publisher
//! (`/v1/projects/{p}/locations/{r}/publishers/google/models/{model}:{method}`, a bearer token
//! issued by this fake's `POST /token`). `generateContent`, `streamGenerateContent` (SSE with
//! CRLF line ends when `alt=sse`, a JSON array otherwise), `batchEmbedContents`/`embedContent`
//! (Gemini API) and `predict` (Vertex), errors as `google.rpc.Status`. Embedding calls keep the
//! APIs' batch limits: 100 requests per `batchEmbedContents`, 250 instances per `predict`, and
//! one for `gemini-embedding-001` on Vertex.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Dialect, Reply, Req, gemini_request, google_token};
use crate::reply::{self, Answer};

pub static DIALECT: Dialect = Dialect {
    name: "gemini",
    matches: |path| path == google_token::PATH || Route::parse(path).is_some(),
    reply: answer,
    error,
};

/// Which model method a path calls, and on which service.
struct Route<'a> {
    vertex: bool,
    model: &'a str,
    method: &'a str,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let (resource, method) = path.rsplit_once(':')?;
        if let Some(model) = ["/v1beta/models/", "/v1/models/"]
            .iter()
            .find_map(|prefix| resource.strip_prefix(prefix))
        {
            return Some(Self {
                vertex: false,
                model,
                method,
            });
        }
        let rest = ["/v1/projects/", "/v1beta1/projects/"]
            .iter()
            .find_map(|prefix| resource.strip_prefix(prefix))?;
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            [_, "locations", _, "publishers", "google", "models", model] => Some(Self {
                vertex: true,
                model,
                method,
            }),
            _ => None,
        }
    }
}

fn answer(req: &Req<'_>) -> Reply {
    if req.path == google_token::PATH {
        return google_token::answer(req);
    }
    let Some(route) = Route::parse(req.path) else {
        return rpc_error(404, "NOT_FOUND", "Method not found.");
    };
    if let Err(refusal) = authorized(req, &route) {
        return refusal;
    }
    let sse = req.query.split('&').any(|p| p == "alt=sse");
    let result = match (route.method, route.vertex) {
        ("generateContent", _) => generate(req, &route, None),
        ("streamGenerateContent", _) => generate(req, &route, Some(sse)),
        ("batchEmbedContents", false) => batch_embed(req, &route),
        ("embedContent", _) => embed_one(req),
        ("predict", true) => predict(req, &route),
        _ => Err(rpc_error(404, "NOT_FOUND", "Method not found.")),
    };
    result.unwrap_or_else(|refusal| refusal)
}

/// The Gemini API wants a key; Vertex a token this fake issued.
fn authorized(req: &Req<'_>, route: &Route<'_>) -> Result<(), Reply> {
    if route.vertex {
        let token = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        if token.is_some_and(google_token::is_issued) {
            return Ok(());
        }
        return Err(rpc_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        ));
    }
    let query_key = req.query.split('&').find_map(|p| p.strip_prefix("key="));
    if req
        .header("x-goog-api-key")
        .or(query_key)
        .is_some_and(|k| !k.is_empty())
    {
        return Ok(());
    }
    Err(rpc_error(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
    ))
}

/// A complete answer (`stream` None), an SSE stream (`Some(true)`) or a JSON array stream.
fn generate(req: &Req<'_>, route: &Route<'_>, stream: Option<bool>) -> Result<Reply, Reply> {
    let view = gemini_request::openai_view(req.body, route.vertex)
        .map_err(|message| rpc_error(400, "INVALID_ARGUMENT", &message))?;
    let prompt = (req.raw.len() as u64 / 4).max(1);
    let answer = reply::answer(&view);
    let envelope = |candidates: Value, usage: Value| {
        json!({"candidates": candidates, "usageMetadata": usage,
               "modelVersion": route.model, "responseId": "fake-gemini-response"})
    };
    let (parts, completion) = match &answer {
        Answer::Text(text) => (vec![json!({"text": text})], text.split(' ').count() as u64),
        Answer::Tool(name) => (vec![call_part(name)], 1),
    };
    let usage = json!({"promptTokenCount": prompt, "candidatesTokenCount": completion,
                       "totalTokenCount": prompt + completion});
    let Some(sse) = stream else {
        let count = req
            .body
            .pointer("/generationConfig/candidateCount")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let candidates: Vec<Value> = (0..count)
            .map(|index| candidate(Value::Array(parts.clone()), Some("STOP"), index))
            .collect();
        return Ok(Reply::json(
            StatusCode::OK,
            envelope(Value::Array(candidates), usage),
        ));
    };
    let partial_usage = json!({"promptTokenCount": prompt, "totalTokenCount": prompt});
    let mut chunks = Vec::new();
    match &answer {
        Answer::Text(text) => {
            let words: Vec<&str> = text.split(' ').collect();
            for (i, word) in words.iter().enumerate() {
                let piece = if i + 1 < words.len() {
                    format!("{word} ")
                } else {
                    (*word).to_owned()
                };
                chunks.push(envelope(
                    json!([candidate(json!([{"text": piece}]), None, 0)]),
                    partial_usage.clone(),
                ));
            }
            // Gemini's last chunk carries an empty text part, the finish reason and the totals.
            chunks.push(envelope(
                json!([candidate(json!([{"text": ""}]), Some("STOP"), 0)]),
                usage,
            ));
        }
        // Function calls come whole, in the finishing chunk.
        Answer::Tool(_) => chunks.push(envelope(
            json!([candidate(Value::Array(parts), Some("STOP"), 0)]),
            usage,
        )),
    }
    if !sse {
        return Ok(Reply::json(StatusCode::OK, Value::Array(chunks)));
    }
    let error = json!({"error": rpc_status(500, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting")});
    Ok(Reply::Stream {
        content_type: "text/event-stream",
        frames: chunks.iter().map(sse_frame).collect(),
        error: sse_frame(&error),
    })
}

fn candidate(parts: Value, finish: Option<&str>, index: u64) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": index});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    candidate
}

/// A whole function call, signed as a thinking model signs it.
fn call_part(name: &str) -> Value {
    json!({"functionCall": {"name": name, "args": {}},
           "thoughtSignature": gemini_request::signature_for(name)})
}

/// `data: <json>` and a CRLF blank line, as Google frames its SSE.
fn sse_frame(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\r\n\r\n"))
}

/// `batchEmbedContents`: one vector per request, each request naming the URL's model.
fn batch_embed(req: &Req<'_>, route: &Route<'_>) -> Result<Reply, Reply> {
    let invalid = |message: &str| rpc_error(400, "INVALID_ARGUMENT", message);
    let requests = req
        .body
        .get("requests")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            invalid("* BatchEmbedContentsRequest.requests: requests is not specified")
        })?;
    if requests.len() > 100 {
        return Err(invalid(
            "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch",
        ));
    }
    let model = format!("models/{}", route.model);
    let mut texts = Vec::new();
    for request in requests {
        if request.get("model").and_then(Value::as_str) != Some(model.as_str()) {
            return Err(invalid(
                "Model name in the request does not match the model in the URL.",
            ));
        }
        texts.push(content_text(request.get("content")));
    }
    let dimensions = requests[0].get("outputDimensionality").cloned();
    let vectors = vectors(&texts, dimensions);
    let embeddings: Vec<Value> = vectors.into_iter().map(|v| json!({"values": v})).collect();
    Ok(Reply::json(
        StatusCode::OK,
        json!({"embeddings": embeddings}),
    ))
}

fn embed_one(req: &Req<'_>) -> Result<Reply, Reply> {
    let text = content_text(req.body.get("content"));
    let dimensions = req.body.get("outputDimensionality").cloned();
    let vector = vectors(&[text], dimensions).pop().unwrap_or_default();
    Ok(Reply::json(
        StatusCode::OK,
        json!({"embedding": {"values": vector}}),
    ))
}

/// Vertex's `predict` for text embedding models, with token counts per instance.
fn predict(req: &Req<'_>, route: &Route<'_>) -> Result<Reply, Reply> {
    let instances = req
        .body
        .get("instances")
        .and_then(Value::as_array)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| rpc_error(400, "INVALID_ARGUMENT", "instances is required"))?;
    let limit = if route.model.starts_with("gemini-embedding-001") {
        1
    } else {
        250
    };
    if instances.len() > limit {
        return Err(rpc_error(
            400,
            "INVALID_ARGUMENT",
            &format!("The model takes at most {limit} instances per request."),
        ));
    }
    let texts: Vec<String> = instances
        .iter()
        .map(|i| {
            i.get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let dimensions = req
        .body
        .pointer("/parameters/outputDimensionality")
        .cloned();
    let predictions: Vec<Value> = vectors(&texts, dimensions)
        .into_iter()
        .zip(&texts)
        .map(|(values, text)| {
            let tokens = (text.len() / 4).max(1);
            json!({"embeddings": {"values": values, "statistics": {"token_count": tokens, "truncated": false}}})
        })
        .collect();
    let characters: usize = texts.iter().map(String::len).sum();
    Ok(Reply::json(
        StatusCode::OK,
        json!({"predictions": predictions, "metadata": {"billableCharacterCount": characters}}),
    ))
}

/// The same vectors the OpenAI dialect answers.
fn vectors(texts: &[String], dimensions: Option<Value>) -> Vec<Value> {
    let mut request = json!({"input": texts});
    if let Some(dimensions) = dimensions {
        request["dimensions"] = dimensions;
    }
    reply::embeddings(&request)["data"]
        .as_array()
        .map(|data| data.iter().map(|d| d["embedding"].clone()).collect())
        .unwrap_or_default()
}

fn content_text(content: Option<&Value>) -> String {
    content
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Google's error answer for `status`.
fn error(status: u16) -> Reply {
    let (name, message) = match status {
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ),
        403 => ("PERMISSION_DENIED", "The caller does not have permission."),
        404 => ("NOT_FOUND", "Requested entity was not found."),
        429 => (
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
        ),
        503 => (
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
        504 => (
            "DEADLINE_EXCEEDED",
            "Deadline expired before operation could complete.",
        ),
        _ => ("INTERNAL", "An internal error has occurred."),
    };
    rpc_error(status, name, message)
}

fn rpc_error(status: u16, name: &str, message: &str) -> Reply {
    Reply::json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"error": rpc_status(status, name, message)}),
    )
}

/// A `google.rpc.Status`; a quota error says when to retry, as Google's do.
fn rpc_status(code: u16, name: &str, message: &str) -> Value {
    let mut status = json!({"code": code, "message": message, "status": name});
    if code == 429 {
        status["details"] = json!([
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                 "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
        ]);
    }
    status
}
