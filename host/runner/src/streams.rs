//! Telling a whole response from a stream, and keeping what a response
//! holds (its instance, and for a stream its stream slot) until its body
//! ends.
//!
//! A component sets its response head before it writes the body (spin-sdk
//! does so even for a small JSON answer), so the head alone cannot say how
//! long the body will take. The rule (docs/adr/0008-runner-bounds.md): a
//! response is a *stream* when its content type is `text/event-stream`, or
//! when its body has not ended within `WHOLE_GRACE` of the head or grows
//! past `WHOLE_MAX_BYTES`. Anything else is *whole*: it holds nothing once
//! read, and goes out framed as the component wrote it — with the length
//! when the component gave one (a `content-length` header, or no body at
//! all), chunked otherwise, as Spin sends it (Spin's conformance test
//! `outbound-wasi-http-v0.2.0-no-perms` fails a runtime that adds a length).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use orders_telemetry::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How long after its head a body may take to end and still be whole.
pub const WHOLE_GRACE: Duration = Duration::from_millis(100);
/// Largest body kept in memory as a whole response.
pub const WHOLE_MAX_BYTES: usize = 1 << 20;

/// Stops an instance's task when dropped, unless it was let go.
pub struct InstanceGuard {
    task: Option<AbortHandle>,
}

impl InstanceGuard {
    pub fn new(task: AbortHandle) -> Self {
        Self { task: Some(task) }
    }

    /// The response is complete: the instance may finish by itself.
    pub fn release(mut self) {
        self.task = None;
    }
}

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the first moments of a body showed.
pub enum Shape {
    /// The body ended: all of it, and whether its length was known before
    /// it was read (no body, or one of a declared length).
    Whole { bytes: Bytes, length_known: bool },
    /// It goes on: the frames read so far, and the rest.
    Stream {
        read: VecDeque<Frame<Bytes>>,
        rest: HyperOutgoingBody,
        event_stream: bool,
    },
}

pub fn is_event_stream<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Reads the start of `body` to tell its shape; fails if the body failed
/// before anything was sent (the caller can still answer with an error).
pub async fn shape_of(mut body: HyperOutgoingBody, event_stream: bool) -> Result<Shape, HttpError> {
    let length_known = body.size_hint().exact().is_some();
    if event_stream {
        return Ok(Shape::Stream {
            read: VecDeque::new(),
            rest: body,
            event_stream,
        });
    }
    let mut read = VecDeque::new();
    let mut size = 0usize;
    let deadline = tokio::time::Instant::now() + WHOLE_GRACE;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Ok(Shape::Stream {
                    read,
                    rest: body,
                    event_stream,
                });
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(error),
            Ok(Some(Ok(frame))) => {
                if frame.is_trailers() {
                    // Rare for a component; keep the trailers by streaming.
                    read.push_back(frame);
                    return Ok(Shape::Stream {
                        read,
                        rest: body,
                        event_stream,
                    });
                }
                if let Some(data) = frame.data_ref() {
                    size += data.len();
                }
                read.push_back(frame);
                if size > WHOLE_MAX_BYTES {
                    return Ok(Shape::Stream {
                        read,
                        rest: body,
                        event_stream,
                    });
                }
            }
        }
    }
    let mut whole = BytesMut::with_capacity(size);
    for frame in read {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Ok(Shape::Whole { bytes: whole.freeze(), length_known })
}

/// The body a whole answer goes out with: sized when its length was known,
/// otherwise of unknown size, so hyper frames it as it would have framed the
/// component's own body (chunked on HTTP/1.1).
pub fn whole_body(bytes: Bytes, length_known: bool) -> HyperOutgoingBody {
    if length_known {
        return crate::app::full_body(bytes);
    }
    LengthUnknown(Some(bytes)).boxed_unsync()
}

/// One chunk of data whose size the body does not announce.
struct LengthUnknown(Option<Bytes>);

impl Body for LengthUnknown {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        Poll::Ready(self.0.take().filter(|bytes| !bytes.is_empty()).map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A stream slot taken, counted in the open-streams gauge while held.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl StreamSlot {
    pub fn new(permit: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Self {
            _permit: permit,
            open,
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A body that replays what was read while telling its shape, then passes
/// the rest on, holding the instance (and for a client's stream, its slot)
/// until the end. Past `lifetime` an event stream ends cleanly (the browser
/// reconnects and resumes with `Last-Event-ID`); any other stream fails, so
/// a cut download never looks complete.
pub struct HeldBody {
    read: VecDeque<Frame<Bytes>>,
    rest: HyperOutgoingBody,
    lifetime: Option<Pin<Box<tokio::time::Sleep>>>,
    event_stream: bool,
    instance: Option<InstanceGuard>,
    _slot: Option<StreamSlot>,
}

impl HeldBody {
    pub fn new(
        read: VecDeque<Frame<Bytes>>,
        rest: HyperOutgoingBody,
        instance: InstanceGuard,
        slot: Option<StreamSlot>,
        lifetime: Option<Duration>,
        event_stream: bool,
    ) -> Self {
        Self {
            read,
            rest,
            lifetime: lifetime.map(|l| Box::pin(tokio::time::sleep(l))),
            event_stream,
            instance: Some(instance),
            _slot: slot,
        }
    }

    pub fn boxed(self) -> HyperOutgoingBody {
        BodyExt::boxed_unsync(self)
    }

    fn finish(&mut self) {
        if let Some(instance) = self.instance.take() {
            instance.release();
        }
        self._slot = None;
    }
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if self.instance.is_none() {
            return Poll::Ready(None);
        }
        if let Some(lifetime) = self.lifetime.as_mut()
            && lifetime.as_mut().poll(cx).is_ready()
        {
            let event_stream = self.event_stream;
            // Dropping the guard stops the instance.
            self.instance = None;
            self._slot = None;
            return Poll::Ready(if event_stream {
                None
            } else {
                Some(Err(HttpError::ConnectionReadTimeout))
            });
        }
        match Pin::new(&mut self.rest).poll_frame(cx) {
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.instance.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn full(text: &'static str) -> HyperOutgoingBody {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    /// A body whose frames a test sends one by one.
    struct ChannelBody(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = HttpError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
            self.0.poll_recv(cx).map(|frame| frame.map(Ok))
        }
    }

    fn endless() -> (tokio::sync::mpsc::Sender<Frame<Bytes>>, HyperOutgoingBody) {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        (sender, ChannelBody(receiver).boxed_unsync())
    }

    #[tokio::test]
    async fn a_body_that_ends_at_once_is_whole() {
        match shape_of(full("{\"ok\":true}"), false).await {
            Ok(Shape::Whole { bytes, length_known }) => {
                assert_eq!(&bytes[..], b"{\"ok\":true}");
                assert!(length_known, "a body of known size");
            }
            _ => panic!("expected a whole body"),
        }
    }

    #[tokio::test]
    async fn a_whole_body_written_without_a_length_goes_out_without_one() {
        let (sender, body) = endless();
        sender.send(Frame::data(Bytes::from_static(b"{}"))).await.unwrap();
        drop(sender);
        let Ok(Shape::Whole { bytes, length_known }) = shape_of(body, false).await else { panic!("expected a whole body") };
        assert!(!length_known);
        let out = whole_body(bytes, length_known);
        assert_eq!(out.size_hint().exact(), None);
        assert_eq!(&out.collect().await.unwrap().to_bytes()[..], b"{}");
        assert_eq!(whole_body(Bytes::new(), true).size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn an_event_stream_is_a_stream_without_reading() {
        assert!(matches!(
            shape_of(full("data: x\n\n"), true).await,
            Ok(Shape::Stream { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_still_open_after_the_grace_is_a_stream_that_replays_its_start() {
        let (sender, body) = endless();
        sender
            .send(Frame::data(Bytes::from_static(b"first")))
            .await
            .unwrap();
        let Ok(Shape::Stream { read, rest, .. }) = shape_of(body, false).await else {
            panic!("expected a stream")
        };
        let task = tokio::spawn(async {});
        let mut held = HeldBody::new(
            read,
            rest,
            InstanceGuard::new(task.abort_handle()),
            None,
            None,
            false,
        );
        let frame = held.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"first"));
        drop(sender);
        assert!(held.frame().await.is_none());
    }

    #[test]
    fn event_streams_are_told_by_content_type() {
        let response = Response::builder()
            .header("content-type", "Text/Event-Stream; charset=utf-8")
            .body(())
            .unwrap();
        assert!(is_event_stream(&response));
        let response = Response::builder()
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        assert!(!is_event_stream(&response));
    }
}
