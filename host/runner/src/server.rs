//! The runner's HTTP edge: accepts connections within the connection cap,
//! gives every request an id (for the logs and the component; only the
//! runner's own answers carry it back), bounds its body, routes it, turns the
//! runner's bounds into clear answers (400/408/413/503/504, never a 500 for
//! a client's behaviour), and serves the reserved `/metrics` path.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::app::{AppShared, ServeError, full_body};
use crate::budget::StopReason;
use crate::connections::{Activity, ConnectionSlot, TrackedBody, WatchedIo, refuse};
use crate::metrics::{Function, ShedReason};
use crate::headers;
use crate::slots::SlotRefused;
use crate::well_known;

/// Extra text appended to `/metrics` (e.g. the in-process sidecar's).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The header that names a request in the logs of the runner, the
/// component and the sidecar.
const REQUEST_ID: &str = "x-request-id";

/// A response and who made it.
enum Answer {
    /// The component's, which the runner passes on unchanged.
    Component(Response<HyperOutgoingBody>),
    /// The runner's own (no route, a bound, a failure, `/metrics`).
    Runner(Response<HyperOutgoingBody>),
}

/// `Retry-After` when a slot or connection frees within moments.
const RETRY_SOON_SECS: u32 = 1;
/// `Retry-After` when every stream slot is taken: streams last minutes.
const RETRY_STREAM_SECS: u32 = 5;

pub struct Edge {
    pub app: Arc<AppShared>,
    pub extra_metrics: Vec<MetricsSource>,
    request_ids: RequestIds,
}

impl Edge {
    pub fn new(app: Arc<AppShared>, extra_metrics: Vec<MetricsSource>) -> Arc<Self> {
        Arc::new(Self { app, extra_metrics, request_ids: RequestIds::new() })
    }

    pub async fn handle(self: Arc<Self>, request: http::Request<Incoming>, client: SocketAddr) -> Response<HyperOutgoingBody> {
        let started = Instant::now();
        let request_id = self.request_ids.accept_or_assign(request.headers().get(REQUEST_ID));
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (function, answer) = self.route_and_serve(request, client, &request_id).await;
        let response = match answer {
            // What a component answers goes out as it answered: Spin adds no
            // header, and a guest may rely on that (Spin's conformance suite
            // fails a runtime that adds one).
            Answer::Component(response) => response,
            // The runner's own answers name the request, so an operator can
            // find its log lines; nginx adds the header to every answer.
            Answer::Runner(mut response) => {
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID, value);
                }
                response
            }
        };
        let status = response.status().as_u16();
        self.app.metrics.observe_request(function, status, started.elapsed());
        tracing::info!(target: "access", request_id = %request_id, method = %method, path = %path,
            function = self.app.metrics.function_name(function), status, micros = started.elapsed().as_micros() as u64, "request");
        response
    }

    async fn route_and_serve(
        &self,
        mut request: http::Request<Incoming>,
        client: SocketAddr,
        request_id: &str,
    ) -> (Function, Answer) {
        if let Err(message) = settle_authority(&mut request) {
            return (Function::NoRoute, Answer::Runner(json_error(StatusCode::BAD_REQUEST, message)));
        }
        if let Some(response) = well_known::answer(request.uri().path(), &self.app.app_info) {
            return (Function::WellKnown, Answer::Runner(response));
        }
        if request.uri().path() == "/metrics" && request.method() == Method::GET {
            return (Function::Metrics, Answer::Runner(self.metrics_response()));
        }
        let Some(route) = self.app.router.route(request.uri().path()) else {
            return (Function::NoRoute, Answer::Runner(json_error(StatusCode::NOT_FOUND, "No route matches this path")));
        };
        // One routing decision: the path as Spin routes it, then the method
        // where the manifest's tool tables name a component for it.
        let name = self.app.method_routes.target(&route.raw_route, request.method()).unwrap_or(&route.component_id);
        let component = self.app.component_id(name).expect("routes only name loaded components");
        let function = Function::Component(component);
        if !headers::values_are_utf8(request.headers()) {
            return (function, Answer::Runner(json_error(StatusCode::BAD_REQUEST, "Every header value must be UTF-8 text")));
        }
        let (mut parts, body) = request.into_parts();
        // The component (and, through it, the sidecar) logs under the same id.
        if let Ok(value) = HeaderValue::from_str(request_id) {
            parts.headers.insert(REQUEST_ID, value);
        }
        // Read the whole body before taking an instance: a slow or huge
        // upload then never holds a pooled instance slot.
        let limits = &self.app.limits;
        let body = match tokio::time::timeout(limits.body_timeout, read_body(body, limits.max_body_bytes)).await {
            Ok(Ok(body)) => body,
            Ok(Err(BodyError::TooLarge)) => {
                let message = format!("Request body is larger than the runner's limit of {} bytes", limits.max_body_bytes);
                return (function, Answer::Runner(json_error(StatusCode::PAYLOAD_TOO_LARGE, &message)));
            }
            Ok(Err(BodyError::Unreadable)) => {
                return (function, Answer::Runner(json_error(StatusCode::BAD_REQUEST, "The request body could not be read")));
            }
            Err(_) => {
                let message = format!("The request body did not arrive within {} ms", limits.body_timeout.as_millis());
                let mut response = json_error(StatusCode::REQUEST_TIMEOUT, &message);
                response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                return (function, Answer::Runner(response));
            }
        };
        let request = http::Request::from_parts(parts, full_body(body));
        let slot = match self.app.request_slot().await {
            Ok(slot) => slot,
            Err(SlotRefused::Busy) => {
                self.app.metrics.observe_shed(ShedReason::Queue);
                let message = format!("Every instance stayed busy for {} ms; retry later", limits.queue_timeout.as_millis());
                return (function, Answer::Runner(unavailable(&message, RETRY_SOON_SECS)));
            }
            Err(SlotRefused::Closed) => return (function, Answer::Runner(unavailable("The runner is shutting down", RETRY_SOON_SECS))),
        };
        match self.app.serve_component(component, &route, request, client, Some(slot)).await {
            Ok(response) => (function, Answer::Component(response)),
            Err(error) => {
                let response = self.error_response(self.app.metrics.function_name(function), request_id, error);
                (function, Answer::Runner(response))
            }
        }
    }

    /// The answer for a request its component did not answer.
    fn error_response(&self, function: &str, request_id: &str, error: ServeError) -> Response<HyperOutgoingBody> {
        let limits = &self.app.limits;
        match error {
            ServeError::BadRequest(detail) => {
                tracing::info!(request_id, function, %detail, "request refused before the component");
                json_error(StatusCode::BAD_REQUEST, "The request cannot be given to the function (invalid headers or URI)")
            }
            ServeError::Instantiation(error) => {
                self.app.metrics.observe_shed(ShedReason::Instantiation);
                tracing::warn!(request_id, function, error = %format!("{error:#}"), "no instance could be made");
                unavailable("No instance of the function could be made now; retry later", RETRY_SOON_SECS)
            }
            ServeError::StreamsFull => {
                let message = format!("Every one of the {} stream slots is taken; retry later", limits.max_streams);
                unavailable(&message, RETRY_STREAM_SECS)
            }
            ServeError::Stopped(StopReason::Deadline) => {
                let message = format!("The function did not answer within {} ms", limits.request_timeout.as_millis());
                json_error(StatusCode::GATEWAY_TIMEOUT, &message)
            }
            ServeError::Stopped(StopReason::Cpu) => {
                let message = format!("The function ran longer than its CPU budget of {} ms", limits.request_cpu.as_millis());
                json_error(StatusCode::GATEWAY_TIMEOUT, &message)
            }
            ServeError::Stopped(StopReason::Memory) => {
                let message = format!(
                    "The function needed more than the {} MiB of memory an instance may use",
                    limits.instance_memory_bytes >> 20
                );
                unavailable(&message, RETRY_SOON_SECS)
            }
            ServeError::Failed(error) => {
                tracing::error!(request_id, function, error = %format!("{error:#}"), "component failed");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "The function failed; the error is logged with this request's id")
            }
        }
    }

    fn metrics_response(&self) -> Response<HyperOutgoingBody> {
        let mut text = self.app.metrics.registry.render();
        for source in &self.extra_metrics {
            text.push_str(&source());
        }
        Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(full_body(Bytes::from(text)))
            .expect("static response parts are valid")
    }
}

/// Gives a request without an authority Spin's default host: an HTTP/1.0
/// request may omit `Host`, and `localhost` is the host Spin puts in
/// `spin-full-url` when there is none (`prepare_request_headers` in its
/// `crates/trigger-http/src/headers.rs`; Spin itself drops such a
/// connection in `set_req_uri`). HTTP/1.1 requires `Host` (RFC 9112,
/// section 3.2: a server must answer 400 without it).
fn settle_authority<B>(request: &mut http::Request<B>) -> Result<(), &'static str> {
    if request.uri().authority().is_some() || request.headers().contains_key(http::header::HOST) {
        return Ok(());
    }
    if request.version() <= Version::HTTP_10 {
        request.headers_mut().insert(http::header::HOST, HeaderValue::from_static("localhost"));
        return Ok(());
    }
    Err("An HTTP/1.1 request needs a Host header")
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// Collects a body of at most `limit` bytes. Past the limit it keeps
/// reading (and discarding) up to a bound, so the client finishes sending
/// and reads the 413 instead of a connection reset.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    const DRAIN_LIMIT: usize = 64 << 20;
    let mut collected = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen <= limit {
            collected.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > limit { Err(BodyError::TooLarge) } else { Ok(Bytes::from(collected)) }
}

/// A 503 with `Retry-After`: the runner is at one of its bounds.
pub fn unavailable(message: &str, retry_after_secs: u32) -> Response<HyperOutgoingBody> {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

pub fn json_error(status: StatusCode, message: &str) -> Response<HyperOutgoingBody> {
    let body = format!("{{\"message\":{}}}", json_string(message));
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full_body(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// `text` as a JSON string literal.
pub(crate) fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Request ids: a client's or balancer's `X-Request-Id` when it is sane,
/// otherwise a new one unique across processes (pid, start time, counter).
struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Self { prefix: format!("{:x}{:05x}", started & 0xffff_ffff, std::process::id() & 0xfffff), counter: AtomicU64::new(0) }
    }

    fn accept_or_assign(&self, given: Option<&HeaderValue>) -> String {
        if let Some(id) = given.and_then(|v| v.to_str().ok())
            && !id.is_empty()
            && id.len() <= 128
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return id.to_owned();
        }
        format!("{}-{:x}", self.prefix, self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

/// Serves `edge` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (up to `drain`). At most `max_connections`
/// are open at once; one more is answered 503 and closed.
pub async fn serve(listener: TcpListener, edge: Arc<Edge>, shutdown: impl Future<Output = ()>, drain: Duration) {
    /// Refusals in progress at once; past it a connection is just closed.
    const MAX_REFUSING: usize = 256;
    let graceful = GracefulShutdown::new();
    let limits = edge.app.limits.clone();
    let connection_slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let open_connections = edge.app.metrics.open_connections.clone();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Slow heads and idle connections are watched in `connections`.
    builder.http1().header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, most likely: wait for some to close
                        // instead of spinning on accept.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = connection_slots.clone().try_acquire_owned() else {
                    edge.app.metrics.observe_shed(ShedReason::Connections);
                    if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            refuse(stream).await;
                            drop(refusal);
                        });
                    }
                    continue;
                };
                let slot = ConnectionSlot::new(permit, open_connections.clone());
                let _ = stream.set_nodelay(true);
                let activity = Activity::new();
                let edge = edge.clone();
                let service_activity = activity.clone();
                let service = hyper::service::service_fn(move |request| {
                    let edge = edge.clone();
                    let in_flight = service_activity.request_started();
                    async move {
                        let response = edge.handle(request, client).await;
                        Ok::<_, std::convert::Infallible>(response.map(|body| TrackedBody::wrap(body, in_flight)))
                    }
                });
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(WatchedIo::new(stream, activity.clone())), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                let (header_timeout, idle_timeout) = (limits.header_timeout, limits.idle_timeout);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = connection => {}
                        // Dropping the connection closes it.
                        () = activity.expired(header_timeout, idle_timeout) => {}
                    }
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still busy after {drain:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_1_0_request_without_host_is_for_localhost() {
        let mut request = http::Request::builder().version(Version::HTTP_10).uri("/healthz").body(()).unwrap();
        settle_authority(&mut request).unwrap();
        assert_eq!(request.headers()[http::header::HOST], "localhost");
    }

    #[test]
    fn an_http_1_1_request_without_host_is_refused() {
        let mut request = http::Request::builder().version(Version::HTTP_11).uri("/healthz").body(()).unwrap();
        assert!(settle_authority(&mut request).is_err());
        let mut request = http::Request::builder().uri("/healthz").header("host", "example.com").body(()).unwrap();
        settle_authority(&mut request).unwrap();
        assert_eq!(request.headers()[http::header::HOST], "example.com");
    }

    #[test]
    fn unavailable_answers_carry_retry_after() {
        let response = unavailable("busy", 3);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[http::header::CONTENT_TYPE], "application/json");
    }
}
