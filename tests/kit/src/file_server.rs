//! A local HTTP file server for the bundle tests: fast files, slow ones, a
//! 404, a redirect anywhere, one that never finishes, one that fails once,
//! one that always fails, one that drips a few bytes at a time.
//! Every file's bytes follow from its name and size, so a test can check
//! what ended up in a zip without keeping copies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

pub struct FileServer {
    pub address: SocketAddr,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

/// How many times each name was asked for, by the endpoints that count.
type Seen = Arc<Mutex<HashMap<String, u32>>>;

fn count(seen: &Seen, name: &str) -> u32 {
    let mut seen = seen.lock().unwrap();
    let count = seen.entry(name.to_owned()).or_default();
    *count += 1;
    *count
}

/// The bytes of file `name` of `size` bytes.
pub fn content(name: &str, size: usize) -> Vec<u8> {
    let seed = name.bytes().fold(7u32, |acc, b| acc.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..size).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

type Params = Query<HashMap<String, String>>;

fn size(params: &Params) -> usize {
    params.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(1024)
}

fn with_length(body: Body, length: usize) -> Response {
    ([(header::CONTENT_LENGTH, length.to_string()), (header::CONTENT_TYPE, "application/octet-stream".to_owned())], body).into_response()
}

async fn fast(Path(name): Path<String>, params: Params) -> Response {
    let bytes = content(&name, size(&params));
    with_length(Body::from(bytes.clone()), bytes.len())
}

/// `bytes` spread over `ms` milliseconds in 20 chunks.
async fn slow(Path(name): Path<String>, params: Params) -> Response {
    let bytes = Bytes::from(content(&name, size(&params)));
    let pause = Duration::from_millis(params.get("ms").and_then(|m| m.parse().ok()).unwrap_or(2000) / 20);
    let step = bytes.len().div_ceil(20).max(1);
    let length = bytes.len();
    let chunks = futures::stream::unfold(0usize, move |offset| {
        let bytes = bytes.clone();
        async move {
            if offset >= bytes.len() {
                return None;
            }
            tokio::time::sleep(pause).await;
            let end = (offset + step).min(bytes.len());
            Some((Ok::<_, std::io::Error>(bytes.slice(offset..end)), end))
        }
    });
    with_length(Body::from_stream(chunks), length)
}

/// Headers, a little of the body, then nothing, forever.
async fn hang() -> Response {
    let chunks = futures::stream::unfold(false, |sent| async move {
        if sent {
            futures::future::pending::<()>().await;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"partial")), true))
    });
    with_length(Body::from_stream(chunks), 1 << 20)
}

async fn redirect(params: Params) -> Response {
    let to = params.get("to").cloned().unwrap_or_default();
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

/// 503 the first time a name is asked for, the file after.
async fn flaky(State(seen): State<Seen>, Path(name): Path<String>, params: Params) -> Response {
    if count(&seen, &format!("flaky/{name}")) == 1 {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    fast(Path(name), params).await
}

/// 503, every time (each request counted).
async fn failing(State(seen): State<Seen>, Path(name): Path<String>) -> Response {
    count(&seen, &format!("fail/{name}"));
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

/// A server that keeps a download alive with a trickle: `chunk` bytes
/// every `every_ms` milliseconds of a file of `bytes`, declared up front.
async fn drip(Path(name): Path<String>, params: Params) -> Response {
    let bytes = Bytes::from(content(&name, size(&params)));
    let every = Duration::from_millis(params.get("every_ms").and_then(|m| m.parse().ok()).unwrap_or(500));
    let step: usize = params.get("chunk").and_then(|c| c.parse().ok()).unwrap_or(1);
    let length = bytes.len();
    let chunks = futures::stream::unfold(0usize, move |offset| {
        let bytes = bytes.clone();
        async move {
            if offset >= bytes.len() {
                return None;
            }
            tokio::time::sleep(every).await;
            let end = (offset + step).min(bytes.len());
            Some((Ok::<_, std::io::Error>(bytes.slice(offset..end)), end))
        }
    });
    with_length(Body::from_stream(chunks), length)
}

impl FileServer {
    pub async fn start() -> Self {
        let seen = Seen::default();
        let app = Router::new()
            .route("/fast/{name}", get(fast))
            .route("/slow/{name}", get(slow))
            .route("/hang", get(hang))
            .route("/redirect", get(redirect))
            .route("/flaky/{name}", get(flaky))
            .route("/fail/{name}", get(failing))
            .route("/drip/{name}", get(drip))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the file server");
        let address = listener.local_addr().expect("file server address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { address, seen, task }
    }

    /// Requests so far to `/fail/{name}` (as `fail/{name}`) or `/flaky/{name}`.
    pub fn hits(&self, path: &str) -> u32 {
        self.seen.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
