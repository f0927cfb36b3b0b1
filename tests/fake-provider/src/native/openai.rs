//! OpenAI's own format (also what every OpenAI-compatible server speaks).

use bytes::Bytes;
use http::StatusCode;

use super::{Dialect, Reply, Req, sse_data};
use crate::reply;

pub static DIALECT: Dialect = Dialect {
    name: "openai",
    matches: |path| path.starts_with("/v1/"),
    reply: answer,
    error: |status| {
        Reply::json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            reply::error_body(status),
        )
    },
};

fn answer(req: &Req<'_>) -> Reply {
    let body = req.body;
    match req.path {
        "/v1/chat/completions" if req.stream_flag() => {
            let mut frames: Vec<Bytes> = reply::chat_chunks(body).iter().map(sse_data).collect();
            frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
            Reply::Stream {
                content_type: "text/event-stream",
                frames,
                error: sse_data(&reply::error_body(500)),
            }
        }
        "/v1/chat/completions" => Reply::json(StatusCode::OK, reply::chat_completion(body)),
        "/v1/embeddings" => Reply::json(StatusCode::OK, reply::embeddings(body)),
        "/v1/images/generations" => Reply::json(StatusCode::OK, reply::images(body)),
        "/v1/models" => Reply::json(StatusCode::OK, reply::models()),
        _ => Reply::json(StatusCode::NOT_FOUND, reply::error_body(404)),
    }
}
