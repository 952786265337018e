//! The runner behaves like Spin where a component can tell. Each test pins
//! one behaviour with the `probe` component (functions/probe) served from
//! tests/fixtures/probe.toml by `orders serve`; the behaviours Spin's own
//! conformance suite checks are among them (docs/spin-conformance.md).

use std::io::{Read, Write};
use std::net::TcpListener;

use orders_testkit::contract::{Answer, Api};
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
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed_port = pong_server();
    let (process, api) = serve_probe(dir.path(), allowed_port, "serve.log");
    Probe { api, allowed_port, _process: process, _dir: dir }
}

/// `orders serve` of the probe manifest on `data_dir`, logging to `log` there.
fn serve_probe(data_dir: &std::path::Path, allowed_port: u16, log: &str) -> (OwnedProcess, Api) {
    ensure_components_built().expect("components build");
    let data_dir_arg = data_dir.display().to_string();
    let args = [
        "serve", "--listen", "127.0.0.1:0", "--manifest", PROBE_MANIFEST, "--no-build",
        "--sidecar-url", "http://127.0.0.1:9", "--sidecar-token", "unused", "--max-body-bytes", "1000",
        "--data-dir", &data_dir_arg,
    ];
    let env = [("SPIN_VARIABLE_ALLOWED_PORT", allowed_port.to_string())];
    let (process, url) = start_orders(ORDERS, &args, &env, &data_dir.join(log)).expect("orders serve");
    (process, Api::new(&url))
}

const PROBE_MANIFEST: &str = "tests/fixtures/probe.toml";

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

/// Spin's conformance suite (`request-shape`) serves
/// `/base/:path_segment/:path_end/...`: Spin names a capture's header from
/// `SPIN_PATH_MATCH_<NAME>` with every `_` written as `-`, takes the host of
/// `spin-full-url` from `Host`, and sets each `spin-*` header once
/// (`crates/trigger-http/src/headers.rs` of `spinframework/spin`).
#[tokio::test(flavor = "multi_thread")]
async fn captures_with_underscores_arrive_under_spins_header_names() {
    let probe = probe();
    let answer = probe.api.send(Method::GET, "/shops/s1/i2/rest?key=value", &[("host", "example.com")], None).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let headers = &answer.body["headers"];
    assert_eq!(headers["spin-path-match-shop-id"], "s1", "{headers}");
    assert_eq!(headers["spin-path-match-item-id"], "i2", "{headers}");
    assert_eq!(headers["spin-path-info"], "/rest");
    assert_eq!(headers["spin-full-url"], "http://example.com/shops/s1/i2/rest?key=value");
    assert_eq!(headers["spin-matched-route"], "/shops/:shop_id/:item_id/...");
    assert_eq!(headers["spin-raw-component-route"], "/shops/:shop_id/:item_id/...");
    assert_eq!(headers["spin-component-route"], "/shops/:shop_id/:item_id");
    let mut spin: Vec<&str> = headers.as_object().expect("headers").keys().map(String::as_str).filter(|name| name.starts_with("spin")).collect();
    spin.sort_unstable();
    assert_eq!(spin, [
        "spin-base-path", "spin-client-addr", "spin-component-route", "spin-full-url", "spin-matched-route",
        "spin-path-info", "spin-path-match-item-id", "spin-path-match-shop-id", "spin-raw-component-route",
    ]);
    assert_eq!(answer.body["repeated_headers"], serde_json::json!([]), "{:?}", answer.body);
}

/// A client cannot pass its own values for the runner's `spin-*` headers
/// (Spin would give the component both, the client's first), and Spin
/// drops `Connection`, transport information only the server needs
/// (`strip_forbidden_headers` in `crates/trigger-http/src/headers.rs`).
#[tokio::test(flavor = "multi_thread")]
async fn the_component_sees_the_runners_spin_headers_and_no_connection_header() {
    let probe = probe();
    let forged = [("spin-path-info", "/forged"), ("spin-client-addr", "203.0.113.9:1"), ("connection", "keep-alive")];
    let answer = probe.api.send(Method::GET, "/wild/a", &forged, None).await;
    let headers = &answer.body["headers"];
    assert_eq!(headers["spin-path-info"], "/a", "{headers}");
    assert!(headers["spin-client-addr"].as_str().unwrap_or_default().starts_with("127.0.0.1:"), "{headers}");
    assert!(headers.get("connection").is_none(), "{headers}");
    assert_eq!(answer.body["repeated_headers"], serde_json::json!([]), "{:?}", answer.body);
}

/// Spin gives a component no request with a header value that is not
/// UTF-8 (`prepare_request_headers` fails, Spin answers 500); the runner
/// refuses it with a JSON 400 before any instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_header_value_that_is_not_utf8_never_reaches_the_component() {
    let probe = probe();
    let address = probe.api.base.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        stream.write_all(b"GET /exact HTTP/1.1\r\nhost: probe\r\nx-name: caf\xe9\r\nconnection: close\r\n\r\n").expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("raw request");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("UTF-8") && answer.contains("application/json"), "{answer}");
}

/// Spin adds no header to what a component answers (its conformance
/// suite fails a runtime that adds `x-request-id`), so the runner passes
/// an answer on as the component made it. The request id still reaches the
/// component, which carries it to the sidecar's logs; the `/orders`
/// components echo it (tests/kit/src/contract.rs), and nginx adds it to
/// every answer in production (tests/infra.rs).
#[tokio::test(flavor = "multi_thread")]
async fn answers_go_out_as_the_component_made_them() {
    let probe = probe();
    // The probe writes its body without a length: it goes out chunked, as
    // under Spin (conformance test `outbound-wasi-http-v0.2.0-no-perms`).
    let plain = probe.api.get("/exact").await;
    let mut names: Vec<&str> = plain.headers.keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["content-type", "date", "transfer-encoding"]);
    assert_eq!(plain.header("transfer-encoding"), Some("chunked"));
    // A length the component declares is kept.
    let declared = probe.api.get("/exact?declare_length").await;
    assert_eq!(declared.status, StatusCode::OK, "{:?}", declared.body);
    assert!(declared.header("content-length").is_some_and(|length| length != "0"), "{:?}", declared.headers);
    assert_eq!(declared.header("transfer-encoding"), None);
    let given = probe.api.send(Method::GET, "/exact", &[("x-request-id", "client-7")], None).await;
    assert_eq!(given.body["headers"]["x-request-id"], "client-7");
    assert!(given.header("x-request-id").is_none(), "{:?}", given.headers);
    let own = probe.api.send(Method::GET, "/exact?answer_header=x-request-id:from-component", &[("x-request-id", "client-8")], None).await;
    let ids: Vec<_> = own.headers.get_all("x-request-id").iter().collect();
    assert_eq!(ids, ["from-component"]);
}

/// The component logs (and tells the sidecar) the request id: the client's
/// when it is sane, else one the runner makes, new for every request.
#[tokio::test(flavor = "multi_thread")]
async fn the_component_gets_the_clients_request_id_or_a_new_one() {
    let probe = probe();
    let id_seen = |answer: &Answer| answer.body["headers"]["x-request-id"].as_str().unwrap_or_default().to_owned();
    let first = id_seen(&probe.api.get("/exact").await);
    let second = id_seen(&probe.api.get("/exact").await);
    assert!(!first.is_empty() && !second.is_empty() && first != second, "{first} {second}");
    let malformed = id_seen(&probe.api.send(Method::GET, "/exact", &[("x-request-id", "has spaces")], None).await);
    assert!(!malformed.is_empty() && malformed != "has spaces", "{malformed}");
}

/// Spin answers `/.well-known/spin/*` itself, before routing: no
/// component, not even the one on `/...`, sees those requests
/// (`HttpServer::handle` in `crates/trigger-http/src/server.rs`).
#[tokio::test(flavor = "multi_thread")]
async fn spins_well_known_paths_never_reach_a_component() {
    let probe = probe();
    let text = |path: &'static str| {
        let url = format!("{}{path}", probe.api.base);
        let client = probe.api.client.clone();
        async move {
            let response = client.get(url).send().await.expect("request");
            (response.status(), response.text().await.unwrap_or_default())
        }
    };
    assert_eq!(text("/.well-known/spin/health").await, (StatusCode::OK, "OK".to_owned()));
    let (status, info) = text("/.well-known/spin/info").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&info).expect("info is JSON")["name"], "probe");
    assert_eq!(text("/.well-known/spin/other").await.0, StatusCode::NOT_FOUND);
    assert_eq!(report(&probe.api, "/.well-known/other").await["component"], "fallback");
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_resolve_templates_and_report_undefined_names() {
    let probe = probe();
    let body = report(&probe.api, "/exact").await;
    assert_eq!(body["variable"]["ok"], "hello-from-exact");
    assert!(body["undefined_variable"].as_str().unwrap_or_default().contains("Undefined"), "{body}");
    // Names Spin refuses are invalid, not undefined (conformance test `variables`).
    let invalid = body["invalid_variable_names"].as_array().cloned().unwrap_or_default();
    assert_eq!(invalid.len(), 3, "{body}");
    assert!(invalid.iter().all(|error| error.as_str().unwrap_or_default().contains("InvalidName")), "{body}");
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
    // Spin's values for a chained request: no client, no `Host` (so the
    // default host), the whole path under `/...`.
    assert_eq!(inner["headers"]["spin-client-addr"], "0.0.0.0:0");
    assert_eq!(inner["headers"]["spin-full-url"], "http://localhost/hello");
    assert_eq!(inner["headers"]["spin-component-route"], "");
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
    // The runner's own answers name the request, so its log lines can be found.
    assert!(large.header("x-request-id").is_some_and(|id| !id.is_empty()), "{:?}", large.headers);
    let named = probe.api.send(Method::POST, "/exact", &[("x-request-id", "big-upload-1")], Some(vec![b'x'; 2000])).await;
    assert_eq!((named.status, named.header("x-request-id")), (StatusCode::PAYLOAD_TOO_LARGE, Some("big-upload-1")));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_instantiation_time_per_function() {
    let probe = probe();
    report(&probe.api, "/exact").await;
    let metrics = probe.api.client.get(format!("{}/metrics", probe.api.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("orders_component_instantiation_seconds_count{function=\"exact\"} 1"), "{metrics}");
    assert!(metrics.contains("orders_http_requests_total{function=\"exact\",status=\"200\"} 1"), "{metrics}");
}

/// The `components compiled` lines of a log (`orders compile`'s own).
fn compile_lines(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .expect("log")
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "components compiled")
        .collect()
}

/// A server compiles what the code cache lacks in a child process, so the
/// compiler's memory (about 60 MiB of these components' worth) never stays
/// in the process that serves; a later start, or one after `orders compile`,
/// compiles nothing.
#[tokio::test(flavor = "multi_thread")]
async fn components_are_compiled_once_and_outside_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed_port = pong_server();

    let (mut first, api) = serve_probe(dir.path(), allowed_port, "first.log");
    report(&api, "/exact").await;
    let compiled = compile_lines(&dir.path().join("first.log"));
    assert_eq!(compiled.len(), 1, "one compile, in a child: {compiled:?}");
    // Every component of probe.toml is the one probe.wasm.
    assert_eq!(compiled[0]["fields"]["compiled"], 1, "{compiled:?}");
    assert_ne!(compiled[0]["fields"]["pid"], first.pid(), "compiled by the server itself: {compiled:?}");
    first.stop();

    let (_second, api) = serve_probe(dir.path(), allowed_port, "second.log");
    report(&api, "/exact").await;
    assert_eq!(compile_lines(&dir.path().join("second.log")), Vec::<Value>::new(), "the cached code is loaded as it is");

    // `orders compile` bakes the cache in ahead, and only once.
    let ahead = tempfile::tempdir().expect("tempdir");
    for expected in [1, 0] {
        let log = ahead.path().join(format!("compile-{expected}.log"));
        let status = std::process::Command::new(ORDERS)
            .current_dir(orders_testkit::repo_root())
            .args(["compile", "--manifest", PROBE_MANIFEST, "--data-dir"])
            .arg(ahead.path())
            .env("ORDERS_LOG", "info")
            .stderr(std::fs::File::create(&log).expect("log"))
            .status()
            .expect("orders compile");
        assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
        let lines = compile_lines(&log);
        assert_eq!(lines.iter().map(|line| line["fields"]["compiled"].clone()).collect::<Vec<_>>(), [expected], "{lines:?}");
    }
    let (_third, api) = serve_probe(ahead.path(), allowed_port, "serve.log");
    report(&api, "/exact").await;
    assert_eq!(compile_lines(&ahead.path().join("serve.log")), Vec::<Value>::new());
}
