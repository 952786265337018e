//! Misbehaves on purpose, so that tests/hostile.rs can pin what the runner
//! does about it. By path:
//! - `/loop`: spins forever without calling the host;
//! - `/alloc`: allocates (and touches) memory until none is left;
//! - `/sleep?ms=N`: holds its instance N ms before answering;
//! - `/stream?ms=N`: an event stream that ticks every 200 ms for N ms;
//! - `/download?ms=N`: a binary body written slowly over N ms;
//! - anything else: a small JSON answer with the URL the host gave it.

use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::json;
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let path_and_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((&path_and_query, ""));
    let ms = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    match path {
        "/loop" => spin(),
        "/alloc" => grow(),
        "/sleep" => {
            std::thread::sleep(Duration::from_millis(ms));
            answer(
                out,
                "application/json",
                json!({ "slept_ms": ms }).to_string(),
            )
            .await;
        }
        "/stream" => {
            drip(
                out,
                "text/event-stream",
                b"data: tick\n\n",
                Duration::from_millis(ms),
            )
            .await
        }
        "/download" => {
            drip(
                out,
                "application/octet-stream",
                &[0x5a; 4096],
                Duration::from_millis(ms),
            )
            .await
        }
        _ => {
            let full_url = request
                .headers()
                .get("spin-full-url")
                .into_iter()
                .next()
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            answer(
                out,
                "application/json",
                json!({ "ok": true, "full_url": full_url }).to_string(),
            )
            .await;
        }
    }
}

fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn grow() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero bytes, so every page is really touched.
        held.push(vec![0x5a; 1 << 20]);
        std::hint::black_box(&held);
    }
}

fn response(content_type: &str) -> OutgoingResponse {
    let headers =
        Fields::from_list(&[("content-type".to_owned(), content_type.as_bytes().to_vec())])
            .expect("valid header");
    OutgoingResponse::new(headers)
}

async fn answer(out: ResponseOutparam, content_type: &str, body: String) {
    let _ = out
        .set_with_body(response(content_type), body.into_bytes())
        .await;
}

/// Writes `chunk` every 200 ms until `lasting` has passed or the client left.
async fn drip(out: ResponseOutparam, content_type: &str, chunk: &[u8], lasting: Duration) {
    let outgoing = response(content_type);
    let mut body = outgoing.take_body();
    out.set(outgoing);
    let started = Instant::now();
    while started.elapsed() < lasting {
        if body.send(chunk.to_vec()).await.is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
