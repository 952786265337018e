//! The runner keeps serving under hostile clients and runaway work
//! (issue 13, docs/adr/0008-runner-bounds.md). Each case attacks the
//! product the way an abusive client would, on loopback only, bounded in
//! time and count, and prints what it measured (`--no-capture` shows it):
//! a stream flood past `--max-streams`, 2,000 slowloris connections, a
//! queue past `--queue-timeout-ms`, a connection flood past
//! `--max-connections`, components that loop, allocate without bound or
//! stall, and requests without a Host header. None may produce a 500 or a
//! crash. The misbehaving component is functions/hostile-probe, served from
//! tests/fixtures/hostile.toml.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orders_testkit::bundle_client::BundleClient;
use orders_testkit::contract::Api;
use orders_testkit::file_server::FileServer;
use orders_testkit::process::OwnedProcess;
use orders_testkit::product::{Backends, Product, ensure_components_built, start_orders};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

/// `orders serve` on the hostile manifest, with `flags`.
struct Hostile {
    api: Api,
    address: SocketAddr,
    process: OwnedProcess,
    _dir: tempfile::TempDir,
}

fn hostile(flags: &[&str]) -> Hostile {
    ensure_components_built().expect("components build");
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().display().to_string();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--manifest",
        "tests/fixtures/hostile.toml",
        "--no-build",
        "--sidecar-url",
        "http://127.0.0.1:9",
        "--sidecar-token",
        "unused",
        "--data-dir",
        &data_dir,
    ];
    args.extend_from_slice(flags);
    let log = dir.path().join("serve.log");
    let (process, url) = start_orders(ORDERS, &args, &[], &log).unwrap_or_else(|error| {
        panic!(
            "orders serve: {error:#}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let address = url
        .trim_start_matches("http://")
        .parse()
        .expect("address in the start line");
    Hostile {
        api: Api::new(&url),
        address,
        process,
        _dir: dir,
    }
}

impl Hostile {
    fn alive(&mut self) -> bool {
        self.process.child.try_wait().ok().flatten().is_none()
    }
}

/// The value of the first `/metrics` line starting with `series`.
async fn metric(api: &Api, series: &str) -> f64 {
    let text = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// No request of the process was answered 500 (its request counter says).
async fn assert_no_500(api: &Api) {
    let text = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.starts_with("orders_http_requests_total") && line.contains("status=\"500\"")
        })
        .collect();
    assert!(errors.is_empty(), "answered 500: {errors:?}");
}

/// Asserts a JSON 503 with `Retry-After`.
fn assert_shed(status: StatusCode, retry_after: Option<&str>, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert!(
        retry_after.is_some_and(|v| v.parse::<u32>().is_ok()),
        "{what}: Retry-After {retry_after:?}"
    );
    assert!(body["message"].as_str().is_some(), "{what}: {body}");
}

/// GETs `path` until `stop`, one request at a time; every status and latency.
async fn get_loop(
    api: Api,
    path: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<(StatusCode, Duration)> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut request = api.client.get(format!("{}{path}", api.base));
        if let Some(key) = &api.key {
            request = request.bearer_auth(key);
        }
        let status = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let _ = response.bytes().await;
                status
            }
            Err(error) => panic!("GET {path} failed while under attack: {error}"),
        };
        seen.push((status, started.elapsed()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

fn summary(latencies: &mut [Duration]) -> (Duration, Duration, Duration) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), *latencies.last().expect("some requests"))
}

/// Sends `request` on a fresh connection and reads the answer to its end.
async fn raw(address: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The test process holds thousands of sockets: raise its soft open-files
/// limit (never past the hard one).
fn raise_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls on a struct this function owns.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_flood_past_max_streams_is_shed_while_the_api_answers() {
    let files = FileServer::start().await;
    let env = [
        ("ORDERS_MAX_INSTANCES", "4".to_owned()),
        ("ORDERS_MAX_STREAMS", "2".to_owned()),
        (
            "ORDERS_FETCH_ALLOW",
            format!("127.0.0.1:{}", files.address.port()),
        ),
    ];
    let backends = Backends {
        extra_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Backends::default()
    };
    let mut product = Product::up(ORDERS, &backends).expect("orders up");
    let api = product.api();
    let mut with_key = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", product.admin_key.as_deref().expect("admin key"));
    with_key.insert(reqwest::header::AUTHORIZATION, bearer.parse().expect("header value"));
    let events_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(with_key)
        .build()
        .expect("client");

    // The report of issue 13: ten resumed streams of an unknown bundle made
    // every route answer 500. An unknown bundle is a 404, with or without
    // Last-Event-ID, and nothing is held.
    let unknown = format!("{}/bundles/000000000000000000000000/events", product.url);
    let answers = futures::future::join_all((0..10).map(|_| {
        events_client
            .get(&unknown)
            .header("last-event-id", "1")
            .send()
    }))
    .await;
    for answer in answers {
        let answer = answer.expect("answer");
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(
        events_client
            .get(&unknown)
            .send()
            .await
            .expect("answer")
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);

    // A real bundle, so its event stream stays open.
    let bundles = BundleClient::new(&product.url, product.admin_key.as_deref());
    let id = bundles
        .create(&[files.url("/fast/banner.png?bytes=2000")])
        .await
        .expect("bundle");
    let events = format!("{}/bundles/{id}/events", product.url);

    let stop = Arc::new(AtomicBool::new(false));
    let api_loop = tokio::spawn(get_loop(api.clone(), "/healthz", stop.clone()));
    let orders_loop = tokio::spawn(get_loop(api.clone(), "/orders?limit=5", stop.clone()));
    let flood_started = Instant::now();
    let answers =
        futures::future::join_all((0..10).map(|_| events_client.get(&events).send())).await;
    let flood_answered = flood_started.elapsed();
    let mut held = Vec::new();
    let mut shed = 0;
    for answer in answers {
        let answer = answer.expect("answer");
        if answer.status() == StatusCode::OK {
            held.push(answer);
        } else {
            let retry_after = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            assert_shed(status, retry_after.as_deref(), &body, "stream past the cap");
            shed += 1;
        }
    }
    // The held streams are live: their first events arrive.
    for stream in &mut held {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("an event in time")
            .expect("read");
        assert!(chunk.is_some_and(|c| !c.is_empty()));
    }
    // The API keeps its slots for a while with every stream slot taken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open_streams = metric(&api, "orders_streams_open").await;
    let shed_streams = metric(&api, "orders_requests_shed_total{reason=\"streams\"}").await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = api_loop.await.expect("loop");
    seen.extend(orders_loop.await.expect("loop"));
    assert!(
        seen.iter().all(|(status, _)| *status == StatusCode::OK),
        "{:?}",
        seen.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    let mut latencies: Vec<Duration> = seen.iter().map(|(_, latency)| *latency).collect();
    let (p50, p99, max) = summary(&mut latencies);
    println!(
        "stream flood: 10 streams against --max-instances 4 --max-streams 2: {} held, {shed} shed with 503 in {flood_answered:?}; \
         gauge orders_streams_open {open_streams}, shed counter {shed_streams}; API meanwhile: {} answers, all 200, p50 {p50:?} p99 {p99:?} max {max:?}",
        held.len(),
        seen.len()
    );
    assert_eq!(held.len(), 2, "streams held");
    assert_eq!(shed, 8, "streams shed");
    assert_eq!(open_streams, 2.0);
    assert_eq!(shed_streams, 8.0);

    // Streams give their slots back when their clients leave.
    drop(held);
    let released = Instant::now();
    loop {
        if metric(&api, "orders_streams_open").await == 0.0 {
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "stream slots not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "stream flood: slots free {:?} after the clients left",
        released.elapsed()
    );
    let again = events_client.get(&events).send().await.expect("answer");
    assert_eq!(again.status(), StatusCode::OK);
    drop(again);
    assert!(
        product.process.child.try_wait().expect("status").is_none(),
        "orders up exited"
    );
    assert_no_500(&api).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_downloads_are_streams_too() {
    let server = hostile(&["--max-instances", "4", "--max-streams", "1"]);
    let client = reqwest::Client::new();
    let first = client
        .get(format!("{}/download?ms=4000", server.api.base))
        .send()
        .await
        .expect("answer");
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.headers().get("content-length"),
        None,
        "a stream has no length"
    );
    let second = server.api.get("/download?ms=4000").await;
    assert_shed(
        second.status,
        second.header("retry-after"),
        &second.body,
        "second download",
    );
    // Whole answers hold nothing: one is served while the only stream
    // slot is taken (it goes out as the probe wrote it, without a length).
    let whole = server.api.get("/").await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body["ok"], true, "{:?}", whole.body);
    drop(first);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_slowloris_connections_do_not_stop_the_api() {
    const SLOWLORIS: usize = 2000;
    raise_open_files(SLOWLORIS as u64 + 1024);
    // The product as users start it, without nginx in front; the header
    // timeout is long enough to open them all on a busy machine and run the
    // API loop before it strikes.
    let env = vec![("ORDERS_HEADER_TIMEOUT_MS".to_owned(), "8000".to_owned())];
    let mut product = Product::up(
        ORDERS,
        &Backends {
            extra_env: env,
            ..Backends::default()
        },
    )
    .expect("orders up");
    let api = product.api();
    let address: SocketAddr = product
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");

    // Each sends a partial head, then one more header line a second.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Instant::now();
    let mut attackers = Vec::new();
    for batch in 0..SLOWLORIS / 200 {
        let connects = (0..200).map(|_| TcpStream::connect(address));
        for (index, stream) in futures::future::join_all(connects)
            .await
            .into_iter()
            .enumerate()
        {
            let mut stream = stream
                .unwrap_or_else(|e| panic!("slowloris connection {}: {e}", batch * 200 + index));
            let stop = stop.clone();
            attackers.push(tokio::spawn(async move {
                if stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.is_err() {
                    return Some(Instant::now());
                }
                let mut buffer = [0u8; 256];
                let mut line = 0;
                while !stop.load(Ordering::Relaxed) {
                    tokio::select! {
                        read = stream.read(&mut buffer) => if matches!(read, Ok(0) | Err(_)) { return Some(Instant::now()) },
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            line += 1;
                            if stream.write_all(format!("X-Slow-{line}: 1\r\n").as_bytes()).await.is_err() {
                                return Some(Instant::now());
                            }
                        }
                    }
                }
                None
            }));
        }
    }
    let open_time = opened.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held_by_server = metric(&api, "orders_connections_open").await;

    // The API, on new connections each time, while all of them hang on.
    let fresh = Api {
        base: api.base.clone(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client"),
        key: api.key.clone(),
    };
    let loop_stop = Arc::new(AtomicBool::new(false));
    let health_loop = tokio::spawn(get_loop(fresh.clone(), "/healthz", loop_stop.clone()));
    let orders_loop = tokio::spawn(get_loop(fresh, "/orders?limit=5", loop_stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    loop_stop.store(true, Ordering::Relaxed);
    let mut seen = health_loop.await.expect("loop");
    seen.extend(orders_loop.await.expect("loop"));
    let still_open = attackers.iter().filter(|a| !a.is_finished()).count();
    let held_after_loop = metric(&api, "orders_connections_open").await;
    assert!(seen.iter().all(|(status, _)| *status == StatusCode::OK));
    let mut latencies: Vec<Duration> = seen.iter().map(|(_, latency)| *latency).collect();
    let (p50, p99, max) = summary(&mut latencies);
    println!(
        "slowloris: {SLOWLORIS} connections opened in {open_time:?}, {held_by_server} open on the server before and {held_after_loop} \
         after the API loop, {still_open} still hanging on; API on fresh connections meanwhile: {} answers, all 200, \
         p50 {p50:?} p99 {p99:?} max {max:?}",
        seen.len()
    );
    assert!(
        held_by_server >= SLOWLORIS as f64,
        "the server held {held_by_server}"
    );
    assert!(
        held_after_loop >= SLOWLORIS as f64,
        "the server held {held_after_loop} after the loop"
    );
    assert_eq!(
        still_open, SLOWLORIS,
        "connections closed before the header timeout"
    );
    assert!(
        max < Duration::from_secs(1),
        "the API took {max:?} under slowloris"
    );

    // The header timeout closes every one of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while attackers.iter().any(|a| !a.is_finished()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut closed_by_server = Vec::new();
    for attacker in attackers {
        if let Some(closed_at) = attacker.await.expect("attacker") {
            closed_by_server.push(closed_at.duration_since(opened));
        }
    }
    closed_by_server.sort();
    println!(
        "slowloris: {} of {SLOWLORIS} closed by the server's 8 s header timeout, between {:?} and {:?} after the first connect",
        closed_by_server.len(),
        closed_by_server.first().copied().unwrap_or_default(),
        closed_by_server.last().copied().unwrap_or_default()
    );
    assert_eq!(closed_by_server.len(), SLOWLORIS);
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    assert_no_500(&api).await;
    assert!(
        product.process.child.try_wait().expect("status").is_none(),
        "orders up exited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_get_503_and_idle_ones_are_closed() {
    let mut server = hostile(&["--max-connections", "20", "--header-timeout-ms", "2000"]);
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(server.address).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = raw(server.address, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].as_str().is_some(), "{body}");

    // The silent ones go at the header timeout; then the API answers again.
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    for stream in &mut idle {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let closed_after = started.elapsed();
    let recovered = Instant::now();
    loop {
        let (status, _) = raw(server.address, "GET / HTTP/1.0\r\n\r\n").await;
        if status == 200 {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(3),
            "still refused: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shed = metric(
        &server.api,
        "orders_requests_shed_total{reason=\"connections\"}",
    )
    .await;
    println!(
        "connection cap 20: the 21st got 503; idle ones closed {closed_after:?} later (2 s header timeout); shed counter {shed}"
    );
    assert!(shed >= 1.0);
    assert_no_500(&server.api).await;
    assert!(server.alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_does_not_arrive_gets_408() {
    let server = hostile(&["--body-timeout-ms", "1000"]);
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    let started = Instant::now();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    println!(
        "slow body: 408 after {:?} (1 s body deadline)",
        started.elapsed()
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"message\""), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_past_the_timeout_sheds_with_503_and_recovers() {
    let mut server = hostile(&["--max-instances", "2", "--queue-timeout-ms", "300"]);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let api = server.api.clone();
            tokio::spawn(async move { api.get("/sleep?ms=3000").await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let queued = futures::future::join_all((0..6).map(|_| {
        let api = server.api.clone();
        async move {
            let answer = api.get("/").await;
            (answer, started.elapsed())
        }
    }))
    .await;
    let mut times = Vec::new();
    for (answer, elapsed) in &queued {
        assert_shed(
            answer.status,
            answer.header("retry-after"),
            &answer.body,
            "queued request",
        );
        times.push(*elapsed);
    }
    let (p50, _, max) = summary(&mut times);
    for holder in holders {
        assert_eq!(holder.await.expect("holder"), StatusCode::OK);
    }
    let recovered = server.api.get("/").await;
    assert_eq!(recovered.status, StatusCode::OK);
    let shed = metric(&server.api, "orders_requests_shed_total{reason=\"queue\"}").await;
    println!(
        "queue: 2 slots held, 6 waiting requests shed with 503 after p50 {p50:?} max {max:?} (300 ms queue timeout); shed counter {shed}; next request 200"
    );
    assert_eq!(shed, 6.0);
    assert_no_500(&server.api).await;
    assert!(server.alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_components_are_stopped_and_the_next_request_is_served() {
    let mut server = hostile(&[
        "--max-instances",
        "8",
        "--request-cpu-ms",
        "500",
        "--request-timeout-ms",
        "3000",
        "--max-instance-memory-mb",
        "32",
    ]);
    let api = server.api.clone();

    let started = Instant::now();
    let looping = api.get("/loop").await;
    let loop_stopped = started.elapsed();
    assert_eq!(
        looping.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        looping.body
    );
    assert!(
        looping.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("CPU"),
        "{}",
        looping.body
    );
    assert_eq!(api.get("/").await.status, StatusCode::OK);

    let started = Instant::now();
    let growing = api.get("/alloc").await;
    let alloc_stopped = started.elapsed();
    assert_shed(
        growing.status,
        growing.header("retry-after"),
        &growing.body,
        "allocating component",
    );
    assert!(
        growing.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("memory"),
        "{}",
        growing.body
    );
    assert_eq!(api.get("/").await.status, StatusCode::OK);

    let started = Instant::now();
    let stalled = api.get("/sleep?ms=20000").await;
    let stall_stopped = started.elapsed();
    assert_eq!(
        stalled.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        stalled.body
    );
    assert_eq!(api.get("/").await.status, StatusCode::OK);

    // Four loops at once (more than the runner's threads) while the API answers.
    let stop = Arc::new(AtomicBool::new(false));
    let api_loop = tokio::spawn(get_loop(api.clone(), "/", stop.clone()));
    let loops = futures::future::join_all((0..4).map(|_| api.get("/loop"))).await;
    stop.store(true, Ordering::Relaxed);
    let seen = api_loop.await.expect("loop");
    assert!(
        loops
            .iter()
            .all(|answer| answer.status == StatusCode::GATEWAY_TIMEOUT)
    );
    assert!(seen.iter().all(|(status, _)| *status == StatusCode::OK));
    let mut latencies: Vec<Duration> = seen.iter().map(|(_, latency)| *latency).collect();
    let (p50, p99, max) = summary(&mut latencies);

    let cpu = metric(
        &api,
        "orders_component_stopped_total{function=\"hostile\",reason=\"cpu\"}",
    )
    .await;
    let memory = metric(
        &api,
        "orders_component_stopped_total{function=\"hostile\",reason=\"memory\"}",
    )
    .await;
    let deadline = metric(
        &api,
        "orders_component_stopped_total{function=\"hostile\",reason=\"deadline\"}",
    )
    .await;
    println!(
        "runaway: loop stopped after {loop_stopped:?} (500 ms CPU budget, 504), allocation after {alloc_stopped:?} (32 MiB, 503), \
         stall after {stall_stopped:?} (3 s deadline, 504); with 4 loops at once the API answered {} times, all 200, \
         p50 {p50:?} p99 {p99:?} max {max:?}; stopped counters cpu {cpu} memory {memory} deadline {deadline}",
        seen.len()
    );
    assert_eq!((cpu, memory, deadline), (5.0, 1.0, 1.0));
    assert_no_500(&server.api).await;
    assert!(server.alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_host_get_what_spin_gives_them() {
    // Spin computes its spin-full-url header with `localhost` when a request
    // has no Host (crates/trigger-http/src/headers.rs in spinframework/spin);
    // HTTP/1.0 allows that, HTTP/1.1 requires a Host (RFC 9112, 3.2).
    let mut server = hostile(&[]);
    let (status, body) = raw(server.address, "GET /echo?x=1 HTTP/1.0\r\n\r\n").await;
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["full_url"], "http://localhost/echo?x=1");
    let (status, body) = raw(
        server.address,
        "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Host"),
        "{body}"
    );
    let (status, _) = raw(server.address, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    println!("host-less: HTTP/1.0 served as http://localhost (200), HTTP/1.1 without Host 400");
    assert_no_500(&server.api).await;
    assert!(server.alive());
}
