//! An answer's body that holds its request's in-flight slot until it ends, so a stream counts
//! for as long as it runs.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::server::ResponseBody;

struct Held {
    body: ResponseBody,
    _slot: OwnedSemaphorePermit,
}

impl Body for Held {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pub fn holding(
    response: Response<ResponseBody>,
    slot: OwnedSemaphorePermit,
) -> Response<ResponseBody> {
    response.map(|body| Held { body, _slot: slot }.boxed_unsync())
}
