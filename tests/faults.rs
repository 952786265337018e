//! The failure modes operators met before, each provoked on purpose: Redis
//! going away, the process killed mid-write, the store down, a port taken,
//! a wrong store host, bad configuration, a small pool under a flood.

use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orders_testkit::contract::{Api, sample_order};
use orders_testkit::process::signal;
use orders_testkit::product::{Backends, Product};
use orders_testkit::services::{MongoServer, RedisServer};
use orders_testkit::repo_root;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

async fn metric(api: &Api, series: &str) -> Option<f64> {
    let text = api.client.get(format!("{}/metrics", api.base)).send().await.ok()?.text().await.ok()?;
    text.lines().find(|line| line.starts_with(series)).and_then(|line| line.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// Runs `orders` to completion with the given arguments (it must fail to start).
fn orders_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(ORDERS);
    command.current_dir(repo_root()).args(args).arg("--data-dir").arg(dir.path());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run orders");
    assert!(!output.status.success(), "expected a failed start: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_keeps_the_api_serving_without_stale_reads_after_recovery() {
    let mut redis = RedisServer::start().expect("redis");
    let backends = Backends { redis_url: Some(redis.url.clone()), ..Backends::default() };
    let product = Product::up(ORDERS, &backends).expect("orders up");
    let api = product.api();
    let id = api.create(&sample_order("redis")).await.body["order"]["_id"].as_str().expect("id").to_owned();
    let path = format!("/orders/{id}");
    assert_eq!(api.get(&path).await.status, StatusCode::OK);
    assert_eq!(api.get(&path).await.body["order"]["version"], 1, "cached read");

    // Frozen, Redis keeps its (soon stale) entries but answers nothing.
    let redis_pid = redis_pid(&redis);
    signal(redis_pid, libc::SIGSTOP);
    let started = Instant::now();
    let updated = api.json(Method::PUT, &path, &json!({"quantity": 42}), &[]).await;
    assert_eq!(updated.status, StatusCode::OK, "write while Redis is down: {:?}", updated.body);
    for _ in 0..5 {
        let read = api.get(&path).await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.body["order"]["quantity"], 42, "read after write while Redis is down");
    }
    assert!(started.elapsed() < Duration::from_secs(15), "degraded mode took {:?}", started.elapsed());
    assert_eq!(metric(&api, "orders_cache_degraded").await, Some(1.0));

    signal(redis_pid, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..3 {
        let read = api.get(&path).await;
        assert_eq!(read.body["order"]["quantity"], 42, "stale value served after Redis came back");
    }
    assert_eq!(metric(&api, "orders_cache_degraded").await, Some(0.0));
    let hits_before = metric(&api, "orders_cache_requests_total{result=\"hit\"}").await.unwrap_or(0.0);
    api.get(&path).await;
    let hits_after = metric(&api, "orders_cache_requests_total{result=\"hit\"}").await.unwrap_or(0.0);
    assert!(hits_after > hits_before, "cache not used again after recovery");

    // A full restart of Redis: the connection manager reconnects by itself.
    redis.pause();
    assert_eq!(api.get(&path).await.status, StatusCode::OK);
    redis.resume().expect("restart redis");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.get(&path).await.status, StatusCode::OK);
    assert_eq!(api.get(&path).await.status, StatusCode::OK);
    let misses = metric(&api, "orders_cache_requests_total{result=\"miss\"}").await.unwrap_or(0.0);
    assert!(misses >= 1.0);
}

fn redis_pid(redis: &RedisServer) -> u32 {
    let output = Command::new("redis-cli").args(["-p", &redis.port.to_string(), "info", "server"]).output().expect("redis-cli");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("redis pid")
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_orders_survive_kill_9_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut product = Product::up_in(ORDERS, &Backends::default(), dir.path(), "127.0.0.1:0").expect("orders up");
    let api = product.api();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|worker| {
            let (api, acknowledged) = (api.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let request = api.client.post(format!("{}/orders", api.base)).json(&sample_order(&format!("k9-{worker}-{n}")));
                    match request.send().await {
                        Ok(response) if response.status() == StatusCode::CREATED => {
                            let body: serde_json::Value = match response.json().await {
                                Ok(body) => body,
                                Err(_) => return,
                            };
                            acknowledged.lock().expect("lock").push(body["order"]["_id"].as_str().unwrap_or_default().to_owned());
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    product.process.kill_hard();
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > 20, "only {} writes before the kill", acknowledged.len());

    let restarted = Product::up_in(ORDERS, &Backends::default(), dir.path(), "127.0.0.1:0").expect("restart");
    let api = restarted.api();
    let mut lost = Vec::new();
    for id in &acknowledged {
        if api.get(&format!("/orders/{id}")).await.status != StatusCode::OK {
            lost.push(id.clone());
        }
    }
    assert!(lost.is_empty(), "{} of {} acknowledged orders lost: {lost:?}", lost.len(), acknowledged.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_store_answers_503_fast_applies_nothing_and_recovers() {
    dead_store_answers_503_fast_applies_nothing_and_recovers_with("method").await;
}

/// The same through the orders router component (the path Spin takes): a
/// chained call must pass the endpoint's 503 and `Retry-After` on unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn dead_store_answers_503_fast_through_the_router_too() {
    dead_store_answers_503_fast_applies_nothing_and_recovers_with("router").await;
}

async fn dead_store_answers_503_fast_applies_nothing_and_recovers_with(routing: &str) {
    let mut mongo = MongoServer::start().expect("MongoDB-wire server");
    let backends = Backends {
        mongo_uri: Some(mongo.uri.clone()),
        mongo_database: Some("faults".into()),
        extra_env: vec![("ORDERS_ROUTING".into(), routing.into())],
        ..Backends::default()
    };
    let product = Product::up(ORDERS, &backends).expect("orders up");
    let api = product.api();
    let before = api.get("/orders?limit=1000").await.body["orders"].as_array().map(Vec::len).unwrap_or(0);

    // Stopped, the server answers nothing on its port until it restarts.
    mongo.stop();
    let port = mongo.port;
    let started = Instant::now();
    let readiness = api.get("/readyz").await;
    assert_eq!(readiness.status, StatusCode::SERVICE_UNAVAILABLE);
    let read = api.get("/orders/0123456789abcdef01234567").await;
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", read.body);
    assert_eq!(read.header("retry-after"), Some("1"));
    assert!(read.body["message"].as_str().is_some());
    let write = api.create(&sample_order("while-down")).await;
    assert_eq!(write.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", write.body);
    // Three answers, each bounded by the 3 s server-selection timeout.
    assert!(started.elapsed() < Duration::from_secs(15), "503s took {:?} (port {port})", started.elapsed());

    mongo.start_again().expect("restart the store");
    let mut recovered = false;
    for _ in 0..60 {
        if api.get("/readyz").await.status == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "the API did not recover after the store came back");
    let after = api.get("/orders?limit=1000").await.body["orders"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(after, before, "a request answered 503 left a record behind");
    assert_eq!(api.create(&sample_order("after")).await.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn small_pool_under_a_flood_queues_or_sheds_and_never_leaks() {
    let mongo = MongoServer::start().expect("MongoDB-wire server");
    let backends = Backends {
        mongo_uri: Some(mongo.uri.clone()),
        mongo_database: Some("pool".into()),
        extra_env: vec![("ORDERS_MONGO_POOL_SIZE".into(), "2".into())],
        ..Backends::default()
    };
    let product = Product::up(ORDERS, &backends).expect("orders up with a pool of 2");
    let api = product.api();
    let id = api.create(&sample_order("pool")).await.body["order"]["_id"].as_str().expect("id").to_owned();
    // 2,000 requests, 500 in flight at a time, against 2 connections.
    let answers: Vec<_> = futures::stream::iter((0..2000).map(|n| {
        let api = api.clone();
        let path = if n % 2 == 0 { format!("/orders/{id}") } else { "/orders?limit=5".to_owned() };
        async move { api.get(&path).await }
    }))
    .buffer_unordered(500)
    .collect()
    .await;
    let ok = answers.iter().filter(|a| a.status == StatusCode::OK).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.status != StatusCode::OK).collect();
    assert!(shed.iter().all(|a| a.status == StatusCode::SERVICE_UNAVAILABLE && a.header("retry-after").is_some()),
        "unexpected answers: {:?}", shed.iter().map(|a| (a.status, a.body.clone())).collect::<Vec<_>>());
    assert!(ok > 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&api, "orders_store_pool_connections{state=\"in_use\"}").await, Some(0.0), "pool connections leaked");
    let open = metric(&api, "orders_store_pool_connections{state=\"idle\"}").await.unwrap_or(0.0);
    assert!(open <= 2.0, "pool grew past its bound: {open}");
}

#[test]
fn port_already_in_use_names_the_port_and_the_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let stderr = orders_fails(&["up", "--no-build", "--listen", &format!("127.0.0.1:{port}")], &[]);
    assert!(stderr.contains(&port.to_string()) && stderr.contains("--listen") && stderr.contains("in use"), "{stderr}");
}

#[test]
fn wrong_store_host_fails_start_naming_host_and_key_but_not_the_password() {
    let stderr = orders_fails(
        &["up", "--no-build", "--listen", "127.0.0.1:0", "--mongo-timeout-ms", "500"],
        &[("ORDERS_MONGO_URI", "mongodb://orders:hunter2@127.0.0.1:1/?authSource=admin")],
    );
    assert!(stderr.contains("127.0.0.1:1") && stderr.contains("ORDERS_MONGO_URI"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
}

#[test]
fn bad_configuration_names_the_key_and_the_allowed_values() {
    let stderr = orders_fails(&["up", "--no-build", "--mongo-read-preference", "fastest"], &[]);
    assert!(stderr.contains("--mongo-read-preference") && stderr.contains("secondaryPreferred"), "{stderr}");
    let stderr = orders_fails(&["up", "--no-build", "--mongo-write-concern", "0"], &[]);
    assert!(stderr.contains("--mongo-write-concern") && stderr.contains("majority"), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("orders.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmongo_url = \"mongodb://x\"\n").expect("write config");
    let stderr = orders_fails(&["up", "--no-build", "--config", &config.display().to_string()], &[]);
    assert!(stderr.contains("mongo_url") && stderr.contains("mongo_uri"), "{stderr}");
    let stderr = orders_fails(&["sidecar", "--listen", "127.0.0.1:0"], &[("ORDERS_SIDECAR_TOKEN", "short")]);
    assert!(stderr.contains("ORDERS_SIDECAR_TOKEN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_database_is_initialised_and_a_second_start_is_fine() {
    let mongo = MongoServer::start().expect("MongoDB-wire server");
    let backends = Backends { mongo_uri: Some(mongo.uri.clone()), mongo_database: Some("fresh".into()), ..Backends::default() };
    let id = {
        let product = Product::up(ORDERS, &backends).expect("first start on an empty database");
        let api = product.api();
        api.create(&sample_order("first")).await.body["order"]["_id"].as_str().expect("id").to_owned()
    };
    let product = Product::up(ORDERS, &backends).expect("second start");
    assert_eq!(product.api().get(&format!("/orders/{id}")).await.status, StatusCode::OK);
}
