//! The runner's HTTP edge: accepts connections, gives every request an id,
//! bounds its body, routes it, and serves the reserved `/metrics` path.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::app::{AppShared, full_body};

/// Extra text appended to `/metrics` (e.g. the in-process sidecar's).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

pub struct Edge {
    pub app: Arc<AppShared>,
    pub max_body_bytes: usize,
    pub extra_metrics: Vec<MetricsSource>,
    request_ids: RequestIds,
}

impl Edge {
    pub fn new(app: Arc<AppShared>, max_body_bytes: usize, extra_metrics: Vec<MetricsSource>) -> Arc<Self> {
        Arc::new(Self { app, max_body_bytes, extra_metrics, request_ids: RequestIds::new() })
    }

    pub async fn handle(self: Arc<Self>, request: http::Request<Incoming>, client: SocketAddr) -> Response<HyperOutgoingBody> {
        let started = Instant::now();
        let request_id = self.request_ids.accept_or_assign(request.headers().get("x-request-id"));
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (function, mut response) = self.route_and_serve(request, client, &request_id).await;
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        let status = response.status().as_u16();
        self.app.metrics.observe_request(&function, status, started.elapsed());
        tracing::info!(target: "access", request_id = %request_id, method = %method, path = %path,
            function = %function, status, micros = started.elapsed().as_micros() as u64, "request");
        response
    }

    async fn route_and_serve(
        &self,
        request: http::Request<Incoming>,
        client: SocketAddr,
        request_id: &str,
    ) -> (String, Response<HyperOutgoingBody>) {
        if request.uri().path() == "/metrics" && request.method() == Method::GET {
            return ("metrics".into(), self.metrics_response());
        }
        let Some(route) = self.app.router.route(request.uri().path()) else {
            return ("none".into(), json_error(StatusCode::NOT_FOUND, "No route matches this path"));
        };
        let component = self.app.component_id(&route.component_id).expect("router only names loaded components");
        let function = route.component_id.clone();
        let (mut parts, body) = request.into_parts();
        if let Ok(value) = HeaderValue::from_str(request_id) {
            parts.headers.insert("x-request-id", value);
        }
        // Read the whole body before taking an instance: a slow or huge
        // upload then never holds a pooled instance slot.
        let body = match read_body(body, self.max_body_bytes).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                let message = format!("Request body is larger than the runner's limit of {} bytes", self.max_body_bytes);
                return (function, json_error(StatusCode::PAYLOAD_TOO_LARGE, &message));
            }
            Err(BodyError::Unreadable) => {
                return (function, json_error(StatusCode::BAD_REQUEST, "The request body could not be read"));
            }
        };
        let request = http::Request::from_parts(parts, full_body(body));
        let Ok(_slot) = self.app.request_slot().await else {
            return (function, json_error(StatusCode::SERVICE_UNAVAILABLE, "The runner is shutting down"));
        };
        match self.app.serve_component(component, &route, request, client).await {
            Ok(response) => (function, response),
            Err(error) => {
                tracing::error!(request_id, function = %function, error = %format!("{error:#}"), "component failed");
                (function, json_error(StatusCode::INTERNAL_SERVER_ERROR, "The function failed; the error is logged with this request's id"))
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

pub fn json_error(status: StatusCode, message: &str) -> Response<HyperOutgoingBody> {
    let body = format!("{{\"message\":{}}}", serde_json_string(message));
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full_body(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn serde_json_string(text: &str) -> String {
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
/// in-flight requests finish (up to `drain`).
pub async fn serve(listener: TcpListener, edge: Arc<Edge>, shutdown: impl Future<Output = ()>, drain: Duration) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, client)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let edge = edge.clone();
                let service = hyper::service::service_fn(move |request| {
                    let edge = edge.clone();
                    async move { Ok::<_, std::convert::Infallible>(edge.handle(request, client).await) }
                });
                let connection = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
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
