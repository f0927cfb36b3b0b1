//! `GET /v1/models` and `GET /v1/models/{model}`: built from the config, filtered to the models
//! the caller's key may use; never forwarded upstream.

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use serde::Serialize;

use super::{Api, openai::bare_error};
use crate::{
    auth,
    error::ApiError,
    server::{ResponseBody, full},
};

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
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
    let model = |id| Model {
        id,
        object: "model",
        created: 0,
        owned_by: "modelgate",
    };
    let body = match request.uri().path().strip_prefix("/v1/models/") {
        None => serde_json::to_vec(&ModelList {
            object: "list",
            data: models.iter().map(|(id, _)| model(id)).collect(),
        }),
        Some(wanted) => match models.iter().find(|(id, _)| *id == wanted) {
            Some((id, _)) => serde_json::to_vec(&model(id)),
            None => return bare_error(&ApiError::model_not_found(wanted)),
        },
    };
    let mut response = Response::new(full(body.unwrap_or_default()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
