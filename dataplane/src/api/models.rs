//! The model list: `GET /v1/models` and `GET /v1/models/{model}` for a key (the models it may
//! use), and the public catalog `GET /api/public/models` (every model, no key; off in a
//! cluster unless enabled). Built from the config, never forwarded upstream.
//!
//! Each entry is OpenAI's model object plus what the catalog knows: group, capability tags,
//! context window, prices, advertised limits and providers. Never a URL, a credential, an
//! upstream model id or anything about keys. The OpenAI SDKs ignore the extra fields.

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use serde::Serialize;

use super::{Api, openai::bare_error};
use crate::{
    auth,
    config::Group,
    error::ApiError,
    server::{ResponseBody, full},
};

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
    /// The ModelGroup serving it.
    group: &'a str,
    /// Capability tags some deployment serves.
    tags: Vec<&'a str>,
    /// The largest context window among its deployments (absent when one has none known).
    #[serde(skip_serializing_if = "Option::is_none")]
    context_window: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    /// Requests and tokens per minute its deployments advertise together (absent when one is
    /// unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    rpm: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpm: Option<u64>,
    providers: Vec<&'static str>,
    /// One entry per distinct price among its deployments, in USD per 1M tokens.
    pricing: Vec<ModelPrice>,
}

#[derive(Serialize, PartialEq)]
struct ModelPrice {
    provider: &'static str,
    input: f64,
    output: f64,
    cached_input: f64,
    /// `deployment` (its own `pricing`) or `catalog` (the list price).
    source: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

fn model<'a>(id: &'a str, group: &'a Group) -> Model<'a> {
    let deployments = &group.deployments;
    let mut tags: Vec<&str> = deployments
        .iter()
        .flat_map(|d| d.capabilities.iter().map(String::as_str))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    let mut providers: Vec<&'static str> = deployments
        .iter()
        .map(|d| d.spec.provider.as_str())
        .collect();
    providers.sort_unstable();
    providers.dedup();
    let mut pricing: Vec<ModelPrice> = Vec::new();
    for d in deployments {
        let Some(price) = d.hot.price else { continue };
        let entry = ModelPrice {
            provider: d.spec.provider.as_str(),
            input: price.base.input,
            output: price.base.output,
            cached_input: price.base.cached_input,
            source: price.source.as_str(),
        };
        if !pricing.contains(&entry) {
            pricing.push(entry);
        }
    }
    let all = |value: fn(&crate::config::Deployment) -> Option<u64>| {
        deployments.iter().map(value).collect::<Option<Vec<u64>>>()
    };
    Model {
        id,
        object: "model",
        created: 0,
        owned_by: "modelgate",
        group: &group.spec.name,
        tags,
        context_window: all(|d| d.hot.context_window).and_then(|w| w.into_iter().max()),
        max_output_tokens: all(|d| d.spec.catalog.as_ref()?.max_output_tokens)
            .and_then(|m| m.into_iter().max()),
        rpm: all(|d| d.hot.rpm).map(|r| r.into_iter().sum()),
        tpm: all(|d| d.hot.tpm).map(|t| t.into_iter().sum()),
        providers,
        pricing,
    }
}

pub fn handle(api: &Api, request: &Request<Incoming>) -> Response<ResponseBody> {
    let Some(snapshot) = api.services.config.current() else {
        return bare_error(&ApiError::not_ready());
    };
    let key = match auth::authenticate(
        &snapshot,
        auth::bearer(request.headers()),
        jiff::Timestamp::now().as_second(),
    ) {
        Ok(key) => key,
        Err(e) => return bare_error(&e),
    };
    let models = snapshot.models_for(key);
    let body = match request.uri().path().strip_prefix("/v1/models/") {
        None => serde_json::to_vec(&ModelList {
            object: "list",
            data: models.iter().map(|(id, group)| model(id, group)).collect(),
        }),
        Some(wanted) => match models.iter().find(|(id, _)| *id == wanted) {
            Some((id, group)) => serde_json::to_vec(&model(id, group)),
            None => return bare_error(&ApiError::model_not_found(wanted)),
        },
    };
    json(body)
}

/// The public catalog: every model name of the config.
pub fn public(api: &Api) -> Response<ResponseBody> {
    let Some(snapshot) = api.services.config.current() else {
        return bare_error(&ApiError::not_ready());
    };
    let data = snapshot
        .all_models()
        .into_iter()
        .map(|(id, group)| model(id, group))
        .collect();
    json(serde_json::to_vec(&ModelList {
        object: "list",
        data,
    }))
}

fn json(body: serde_json::Result<Vec<u8>>) -> Response<ResponseBody> {
    let mut response = Response::new(full(body.unwrap_or_default()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
