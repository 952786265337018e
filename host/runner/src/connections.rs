//! Bounds on client connections, as nginx sets them: a connection must
//! send its first request head within the header timeout of being
//! accepted; between requests it may stay silent for the idle timeout,
//! and once the next head starts it must end within the header timeout.
//! While a request is in flight (body read, component, response body) the
//! other bounds apply (body deadline, request deadline, stream lifetime).
//!
//! The watch is kept here rather than with hyper's `header_read_timeout`:
//! hyper starts that timer at the beginning of every wait for a head, so it
//! cannot tell an idle keep-alive connection from a slow head, and it does
//! not cover the protocol detection of hyper-util's auto builder, where a
//! client sending nothing (or the HTTP/2 preface one byte at a time) waits
//! before hyper's timer exists.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use orders_telemetry::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The timing state of one connection.
pub struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

struct Phase {
    /// Requests whose response has not ended yet.
    in_flight: u32,
    /// Requests started on this connection.
    started: u64,
    /// When the connection last began waiting for a request head.
    waiting_since: Instant,
    /// The first byte received since then.
    first_byte_at: Option<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::new(Phase {
                in_flight: 0,
                started: 0,
                waiting_since: Instant::now(),
                first_byte_at: None,
            }),
            changed: Notify::new(),
        })
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bytes_received(&self) {
        let mut phase = self.phase();
        if phase.in_flight == 0 && phase.first_byte_at.is_none() {
            phase.first_byte_at = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request head was read: the connection is busy until its response ends.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        let mut phase = self.phase();
        phase.in_flight += 1;
        phase.started += 1;
        drop(phase);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn request_ended(&self) {
        let mut phase = self.phase();
        phase.in_flight = phase.in_flight.saturating_sub(1);
        if phase.in_flight == 0 {
            phase.waiting_since = Instant::now();
            phase.first_byte_at = None;
        }
        drop(phase);
        self.changed.notify_one();
    }

    /// When the connection must be closed if nothing changes; `None` while busy.
    fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        let phase = self.phase();
        if phase.in_flight > 0 {
            return None;
        }
        Some(match (phase.started, phase.first_byte_at) {
            (0, _) => phase.waiting_since + header_timeout,
            (_, Some(first_byte)) => first_byte + header_timeout,
            (_, None) => phase.waiting_since + idle_timeout,
        })
    }

    /// Resolves when the connection has outlived its bound.
    pub async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            match self.deadline(header_timeout, idle_timeout) {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Marks a request in flight until dropped.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request in flight until it ends.
pub struct TrackedBody {
    inner: HyperOutgoingBody,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub fn wrap(inner: HyperOutgoingBody, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client socket that tells its `Activity` when bytes arrive.
pub struct WatchedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl WatchedIo {
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let outcome = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_received();
        }
        outcome
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// One open connection, counted in the open-connections gauge.
pub struct ConnectionSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: Gauge,
}

impl ConnectionSlot {
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Self {
            _permit: permit,
            open,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// The answer to a connection past the cap, written before its request is
/// read (HTTP/1.1 clients read a response that comes early).
pub const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 70\r\n\r\n{\"message\":\"The server holds its maximum of connections; retry later\"}";

/// Answers 503 and closes. The read side is drained for a moment after the
/// answer, so that the client's request does not turn the close into a
/// reset that would discard the answer.
pub async fn refuse(mut stream: TcpStream) {
    const LINGER: Duration = Duration::from_millis(500);
    let _ = tokio::time::timeout(LINGER, async {
        stream.write_all(REFUSED).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(75);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_to_send_its_first_head() {
        let activity = Activity::new();
        let accepted = Instant::now();
        assert_eq!(activity.deadline(HEADER, IDLE), Some(accepted + HEADER));
        activity.bytes_received();
        assert_eq!(activity.deadline(HEADER, IDLE), Some(accepted + HEADER));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_has_no_deadline_and_then_idles() {
        let activity = Activity::new();
        let in_flight = activity.request_started();
        assert_eq!(activity.deadline(HEADER, IDLE), None);
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(in_flight);
        let idle_since = Instant::now();
        assert_eq!(activity.deadline(HEADER, IDLE), Some(idle_since + IDLE));
        tokio::time::advance(Duration::from_secs(20)).await;
        activity.bytes_received();
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some(Instant::now() + HEADER)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_resolves_at_the_deadline() {
        let activity = Activity::new();
        let started = Instant::now();
        activity.expired(HEADER, IDLE).await;
        assert_eq!(Instant::now() - started, HEADER);
    }

    #[test]
    fn the_refusal_declares_its_length() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head} / {}",
            body.len()
        );
    }
}
