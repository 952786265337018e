//! The runner behaves like Spin where a component can tell. Each test pins
//! one behaviour with the `probe` component (functions/probe) served from
//! tests/fixtures/probe.toml by `orders serve`.

use std::io::{Read, Write};
use std::net::TcpListener;

use orders_testkit::contract::Api;
use orders_testkit::product::{ensure_components_built, start_orders};
use orders_testkit::process::OwnedProcess;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

/// A loopback HTTP server answering every request with `pong`.
fn pong_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong");
        }
    });
    port
}

struct Probe {
    api: Api,
    allowed_port: u16,
    _process: OwnedProcess,
    _dir: tempfile::TempDir,
}

fn probe() -> Probe {
    ensure_components_built().expect("components build");
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed_port = pong_server();
    let data_dir = dir.path().display().to_string();
    let args = [
        "serve", "--listen", "127.0.0.1:0", "--manifest", "tests/fixtures/probe.toml", "--no-build",
        "--sidecar-url", "http://127.0.0.1:9", "--sidecar-token", "unused", "--max-body-bytes", "1000",
        "--data-dir", &data_dir,
    ];
    let env = [("SPIN_VARIABLE_ALLOWED_PORT", allowed_port.to_string())];
    let (process, url) = start_orders(ORDERS, &args, &env, &dir.path().join("serve.log")).expect("orders serve");
    Probe { api: Api::new(&url), allowed_port, _process: process, _dir: dir }
}

async fn report(api: &Api, path: &str) -> Value {
    let answer = api.get(path).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
    answer.body
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_route_beats_catch_all_and_longest_prefix_wins() {
    let probe = probe();
    for (path, component) in [("/exact", "exact"), ("/exact/more", "fallback"), ("/wild", "wild"), ("/wild/a/b", "wild"),
        ("/users/42", "user"), ("/users/42/x", "fallback"), ("/", "fallback"), ("/private", "fallback")] {
        assert_eq!(report(&probe.api, path).await["component"], component, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_headers_describe_the_route() {
    let probe = probe();
    let headers = report(&probe.api, "/wild/a/b?x=1").await["headers"].clone();
    let host = probe.api.base.trim_start_matches("http://");
    assert_eq!(headers["spin-full-url"], format!("http://{host}/wild/a/b?x=1"));
    assert_eq!(headers["spin-path-info"], "/a/b");
    assert_eq!(headers["spin-matched-route"], "/wild/...");
    assert_eq!(headers["spin-raw-component-route"], "/wild/...");
    assert_eq!(headers["spin-component-route"], "/wild");
    assert_eq!(headers["spin-base-path"], "/");
    assert!(headers["spin-client-addr"].as_str().unwrap_or_default().starts_with("127.0.0.1:"), "{headers}");
    let headers = report(&probe.api, "/users/42").await["headers"].clone();
    assert_eq!(headers["spin-path-match-id"], "42");
    assert_eq!(headers["spin-path-info"], "");
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_resolve_templates_and_report_undefined_names() {
    let probe = probe();
    let body = report(&probe.api, "/exact").await;
    assert_eq!(body["variable"]["ok"], "hello-from-exact");
    assert!(body["undefined_variable"].as_str().unwrap_or_default().contains("Undefined"), "{body}");
    // A component without the variable in its [component.x.variables] cannot read it.
    let body = report(&probe.api, "/wild").await;
    assert!(body["variable"]["error"].as_str().unwrap_or_default().contains("Undefined"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_requests_follow_allowed_outbound_hosts() {
    let probe = probe();
    let allowed = format!("/exact?call=http://127.0.0.1:{}/ping", probe.allowed_port);
    let body = report(&probe.api, &allowed).await;
    assert_eq!(body["outbound"]["status"], 200, "{body}");
    assert_eq!(body["outbound"]["body"], "pong");
    let other_port = format!("/exact?call=http://127.0.0.1:{}/ping", probe.allowed_port.wrapping_add(1));
    let body = report(&probe.api, &other_port).await;
    assert!(body["outbound"]["error"].as_str().unwrap_or_default().contains("HttpRequestDenied"), "{body}");
    // A component with no allow-list may call nothing.
    let body = report(&probe.api, &format!("/wild?call=http://127.0.0.1:{}/ping", probe.allowed_port)).await;
    assert!(body["outbound"]["error"].as_str().unwrap_or_default().contains("HttpRequestDenied"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn service_chaining_reaches_private_components_in_process() {
    let probe = probe();
    let body = report(&probe.api, "/exact?call=http://private.spin.internal/hello").await;
    assert_eq!(body["outbound"]["status"], 200, "{body}");
    let inner: Value = serde_json::from_str(body["outbound"]["body"].as_str().unwrap_or("{}")).expect("json");
    assert_eq!(inner["component"], "private");
    assert_eq!(inner["headers"]["spin-matched-route"], "/...");
    assert_eq!(inner["headers"]["spin-path-info"], "/hello");
    // Not allowed for a component that did not list it.
    let body = report(&probe.api, "/wild?call=http://private.spin.internal/hello").await;
    assert!(body["outbound"]["error"].as_str().unwrap_or_default().contains("HttpRequestDenied"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_gets_a_fresh_instance() {
    let probe = probe();
    for _ in 0..5 {
        assert_eq!(report(&probe.api, "/exact").await["served_by_this_instance"], 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_over_the_limit_get_413_before_any_instance() {
    let probe = probe();
    let small = probe.api.send(Method::POST, "/exact", &[], Some(vec![b'x'; 900])).await;
    assert_eq!(small.body["body_len"], 900);
    let large = probe.api.send(Method::POST, "/exact", &[], Some(vec![b'x'; 2000])).await;
    assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(large.body["message"].as_str().is_some(), "{:?}", large.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_instantiation_time_per_function() {
    let probe = probe();
    report(&probe.api, "/exact").await;
    let metrics = probe.api.client.get(format!("{}/metrics", probe.api.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("orders_component_instantiation_seconds_count{function=\"exact\"} 1"), "{metrics}");
    assert!(metrics.contains("orders_http_requests_total{function=\"exact\",status=\"200\"} 1"), "{metrics}");
}
