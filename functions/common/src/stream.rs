//! For components that stream a body (Server-Sent Events, downloads, the
//! orders router) and so take the raw WASI request and response out-parameter.

use std::task::Poll;

use futures::{Stream, StreamExt};
use spin_executor::{CancelOnDropToken, push_waker_and_get_token};
use spin_sdk::http::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, Response, ResponseOutparam};
use wasi::io::streams::{OutputStream, StreamError};

use crate::error::ApiError;

/// The first value of header `name`, as text.
pub fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    request.headers().get(name).into_iter().next().and_then(|value| String::from_utf8(value).ok())
}

/// A response with `headers`, ready for its body to be streamed.
pub fn streaming_response(status: u16, headers: &[(&str, String)]) -> OutgoingResponse {
    let list: Vec<(String, Vec<u8>)> = headers.iter().map(|(name, value)| ((*name).to_owned(), value.clone().into_bytes())).collect();
    let response = OutgoingResponse::new(Fields::from_list(&list).expect("header names and values we set are valid"));
    response.set_status_code(status).expect("a valid status code");
    response
}

/// Sends an already built (small) response through the out-parameter.
pub async fn send_whole(out: ResponseOutparam, response: Response) {
    let headers: Vec<(&str, String)> =
        response.headers().filter_map(|(name, value)| value.as_str().map(|v| (name, v.to_owned()))).collect();
    let outgoing = streaming_response(*response.status(), &headers);
    let _ = out.set_with_body(outgoing, response.body().to_vec()).await;
}

/// Sends an API error through the out-parameter.
pub async fn send_error(out: ResponseOutparam, error: ApiError) {
    send_whole(out, error.into_response()).await;
}

/// Why a piped body stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The body being read failed (a client or a callee cut it off).
    Source,
    /// The body being written could not take more (its reader went away).
    Sink,
}

/// Copies `chunks` into `body` as they arrive, then finishes `body`. When
/// either side fails, `body` is dropped unfinished, which the host takes as
/// an aborted body, so its reader never mistakes a cut body for a whole
/// one (spin-sdk's body sink finishes whatever happened).
pub async fn pipe<E>(mut chunks: impl Stream<Item = Result<Vec<u8>, E>> + Unpin, body: OutgoingBody) -> Result<(), Cut> {
    let Ok(stream) = body.write() else { return Err(Cut::Sink) };
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else { return Err(Cut::Source) };
        write_all(&stream, &chunk).await.map_err(|_| Cut::Sink)?;
    }
    // The stream is the body's child: it goes first.
    drop(stream);
    OutgoingBody::finish(body, None).map_err(|_| Cut::Sink)
}

async fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let room = usize::try_from(stream.check_write()?).unwrap_or(usize::MAX);
        if room == 0 {
            writable(stream).await;
            continue;
        }
        let count = room.min(bytes.len());
        stream.write(&bytes[..count])?;
        bytes = &bytes[count..];
    }
    Ok(())
}

/// Waits, without blocking the component's other tasks, until `stream`
/// takes more bytes.
async fn writable(stream: &OutputStream) {
    let mut waiting: Option<CancelOnDropToken> = None;
    futures::future::poll_fn(|context| {
        let pollable = stream.subscribe();
        if pollable.ready() {
            return Poll::Ready(());
        }
        waiting = Some(push_waker_and_get_token(pollable, context.waker().clone()).into());
        Poll::Pending
    })
    .await
}
