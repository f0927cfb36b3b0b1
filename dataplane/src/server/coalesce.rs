//! A streamed answer's body that writes what is already in hand at once.
//!
//! hyper writes (and the client is woken) each time the body has no frame ready. An upstream's
//! events usually arrive many to a read, but reach the body one at a time: the client
//! connection's task decodes the next one only after the last was taken, and it lands two
//! scheduler passes later (measured: with one pass every event still went out alone). So after
//! the first write, which carries the response head, the body holds what it has, yields for up
//! to `PASSES` passes while nothing new comes, and takes what arrived; it lets go when those
//! passes bring nothing, when it holds `MAX_HELD` bytes, or at the end. A stream whose events
//! come with gaps between them sees each one go out two passes later; one whose events come
//! together goes out in one write instead of one per event.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, stream::BoxStream};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::ResponseBody;

/// Past this, the held bytes go out without waiting for more.
const MAX_HELD: usize = 64 * 1024;
/// Scheduler passes to wait for more before writing what is held.
const PASSES: u8 = 2;

/// The body of a streamed answer: `chunks` as they come, coalesced as above; empty chunks are
/// dropped, so a stream may yield them instead of skipping them itself.
pub fn streamed(chunks: impl Stream<Item = Bytes> + Send + 'static) -> ResponseBody {
    Coalesce {
        chunks: Box::pin(chunks),
        held: Batch::Nothing,
        wrote: false,
        passed: 0,
        ended: false,
    }
    .boxed_unsync()
}

struct Coalesce {
    chunks: BoxStream<'static, Bytes>,
    held: Batch,
    /// Something went out already (with it, the head).
    wrote: bool,
    /// Passes yielded since the last chunk.
    passed: u8,
    ended: bool,
}

/// One chunk is passed on as it came; only a second one costs a copy.
enum Batch {
    Nothing,
    One(Bytes),
    Many(BytesMut),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Nothing => 0,
            Batch::One(bytes) => bytes.len(),
            Batch::Many(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        *self = match std::mem::replace(self, Batch::Nothing) {
            Batch::Nothing => Batch::One(chunk),
            Batch::One(first) => {
                let mut many = BytesMut::with_capacity((first.len() + chunk.len()) * 2);
                many.extend_from_slice(&first);
                many.extend_from_slice(&chunk);
                Batch::Many(many)
            }
            Batch::Many(mut many) => {
                many.extend_from_slice(&chunk);
                Batch::Many(many)
            }
        }
    }

    fn take(&mut self) -> Option<Bytes> {
        match std::mem::replace(self, Batch::Nothing) {
            Batch::Nothing => None,
            Batch::One(bytes) => Some(bytes),
            Batch::Many(bytes) => Some(bytes.freeze()),
        }
    }
}

impl Body for Coalesce {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        while !this.ended {
            match this.chunks.as_mut().poll_next(cx) {
                Poll::Ready(Some(chunk)) => {
                    this.passed = 0;
                    if !chunk.is_empty() {
                        this.held.push(chunk);
                    }
                    if this.held.len() >= MAX_HELD {
                        break;
                    }
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending if this.held.len() == 0 => return Poll::Pending,
                Poll::Pending if this.wrote && this.passed < PASSES => {
                    // Let the tasks that feed the stream run before writing what is held.
                    this.passed += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => break,
            }
        }
        this.passed = 0;
        this.wrote = true;
        Poll::Ready(this.held.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.held.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use futures_util::{StreamExt, stream};

    use super::*;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(body: &mut ResponseBody, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        Pin::new(body)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.ok().and_then(|f| f.into_data().ok()).unwrap_or_default()))
    }

    /// A scripted stream: each `None` is one `Pending` (with a wake), like an upstream whose
    /// next event is a scheduler pass away.
    fn scripted(script: Vec<Option<Bytes>>) -> impl Stream<Item = Bytes> + Send {
        let mut script = script.into_iter();
        stream::poll_fn(move |cx| match script.next() {
            Some(Some(chunk)) => Poll::Ready(Some(chunk)),
            Some(None) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            None => Poll::Ready(None),
        })
    }

    fn chunk(s: &'static str) -> Option<Bytes> {
        Some(Bytes::from_static(s.as_bytes()))
    }

    fn frames(body: &mut ResponseBody) -> Vec<Bytes> {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Arc::clone(&wakes).into();
        let mut cx = Context::from_waker(&waker);
        let mut frames = Vec::new();
        for _ in 0..50 {
            let before = wakes.0.load(Ordering::SeqCst);
            match poll(body, &mut cx) {
                Poll::Ready(Some(bytes)) => frames.push(bytes),
                Poll::Ready(None) => return frames,
                Poll::Pending => assert!(
                    wakes.0.load(Ordering::SeqCst) > before,
                    "pending without a wake"
                ),
            }
        }
        panic!("the body did not end: {frames:?}");
    }

    #[test]
    fn the_head_goes_out_at_once_then_events_in_hand_go_out_as_one() {
        let first = Bytes::from_static(b"data: role\n\n");
        let first_ptr = first.as_ptr();
        let mut body = streamed(scripted(vec![
            Some(first),
            None,
            chunk("data: a\n\n"),
            None,
            None,
            chunk("data: b\n\n"),
            None,
            chunk(""),
            chunk("data: c\n\n"),
            None,
            None,
            None,
            chunk("data: [DONE]\n\n"),
            chunk(""),
        ]));
        let frames = frames(&mut body);
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames[0].as_ptr(), first_ptr, "a lone chunk is not copied");
        assert_eq!(&frames[1][..], b"data: a\n\ndata: b\n\ndata: c\n\n");
        assert_eq!(&frames[2][..], b"data: [DONE]\n\n");
        assert!(body.is_end_stream());
    }

    #[test]
    fn passes_that_bring_nothing_let_the_held_chunk_go() {
        let mut body =
            streamed(scripted(vec![chunk("head"), None, chunk("x")]).chain(stream::pending()));
        let waker = Arc::new(CountWakes(AtomicUsize::new(0))).into();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(
            poll(&mut body, &mut cx),
            Poll::Ready(Some(Bytes::from_static(b"head")))
        );
        for pass in 0..PASSES {
            assert!(poll(&mut body, &mut cx).is_pending(), "pass {pass} waits");
        }
        assert_eq!(
            poll(&mut body, &mut cx),
            Poll::Ready(Some(Bytes::from_static(b"x")))
        );
        assert!(poll(&mut body, &mut cx).is_pending());
    }

    #[test]
    fn past_the_cap_the_held_bytes_go_out_without_waiting() {
        let big = Bytes::from(vec![b'x'; MAX_HELD]);
        let mut body = streamed(stream::iter([big.clone(), big]).chain(stream::pending()));
        let waker = Arc::new(CountWakes(AtomicUsize::new(0))).into();
        let mut cx = Context::from_waker(&waker);
        match poll(&mut body, &mut cx) {
            Poll::Ready(Some(bytes)) => assert_eq!(bytes.len(), MAX_HELD),
            other => panic!("expected the first chunk at once, got {other:?}"),
        }
    }
}
