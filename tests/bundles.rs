//! The bundle pipeline end to end, on the product as users start it: a
//! local file server with fast, slow, missing, oversized, redirecting,
//! hanging and flaky files; the embedded default and MongoDB + Redis; a
//! worker killed mid-job; nginx checking the signed links; a real browser.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orders_testkit::bundle_client::{BundleClient, SseEvent, zip_entries};
use orders_testkit::file_server::{FileServer, content};
use orders_testkit::product::{Backends, Cluster, Product};
use orders_testkit::repo_root;
use orders_testkit::services::{MongoServer, RedisServer};
use serde_json::{Value, json};

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");
const MIB: usize = 1 << 20;

/// Limits small enough to hit quickly; the file server is the one private
/// address allowed.
fn bundle_env(files: &FileServer) -> Vec<(String, String)> {
    [
        ("ORDERS_FETCH_ALLOW", format!("127.0.0.1:{}", files.address.port())),
        ("ORDERS_BUNDLE_MAX_FILE_BYTES", (2 * MIB).to_string()),
        ("ORDERS_FETCH_TIMEOUT_MS", "4000".to_owned()),
        ("ORDERS_BUNDLE_CLAIM_TIMEOUT_MS", "3000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One URL of the scenario: where it points, and what must become of it.
struct Case {
    url: String,
    /// `Ok((name in the zip, name on the server, size))` or `Err(error code)`.
    expect: Result<(&'static str, &'static str, usize), &'static str>,
}

fn scenario(files: &FileServer) -> Vec<Case> {
    let other_port = orders_testkit::process::free_port();
    vec![
        Case { url: files.url("/fast/logo.png?bytes=200000"), expect: Ok(("logo.png", "logo.png", 200_000)) },
        Case { url: files.url(&format!("/slow/photo.jpg?bytes={MIB}&ms=2000")), expect: Ok(("photo.jpg", "photo.jpg", MIB)) },
        Case { url: files.url("/nothing/here.png"), expect: Err("http_status") },
        Case { url: files.url(&format!("/fast/huge.bin?bytes={}", 3 * MIB)), expect: Err("too_large") },
        Case { url: files.url("/redirect?to=http://169.254.169.254/latest/meta-data/"), expect: Err("forbidden_address") },
        Case { url: files.url(&format!("/redirect?to=http://127.0.0.1:{other_port}/secret")), expect: Err("forbidden_address") },
        Case { url: files.url("/fast/..%2F..%2Fetc%2Fpasswd?bytes=100"), expect: Ok(("etc_passwd", "../../etc/passwd", 100)) },
        Case { url: files.url("/hang"), expect: Err("timeout") },
        Case { url: files.url("/flaky/retry.txt?bytes=5000"), expect: Ok(("retry.txt", "retry.txt", 5000)) },
        Case { url: files.url("/fast/logo.png?bytes=300"), expect: Ok(("logo-2.png", "logo.png", 300)) },
    ]
}

fn stored(events: &[SseEvent]) -> Vec<&SseEvent> {
    events.iter().filter(|e| e.event != "clock").collect()
}

/// Everything a client sees of one bundle, checked against the scenario.
async fn run_scenario(base: &str, key: Option<&str>, files: &FileServer, data_dir: &std::path::Path) {
    let client = BundleClient::new(base, key);
    let cases = scenario(files);
    let urls: Vec<String> = cases.iter().map(|c| c.url.clone()).collect();
    let id = client.create(&urls).await.unwrap();
    let events = client.follow(&id, None, Duration::from_secs(90), |_| false).await.unwrap();
    let names: Vec<&str> = stored(&events).iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"queued"), "{names:?}");
    assert_eq!(names.last(), Some(&"ready"), "{names:?}");
    assert!(names.contains(&"started") && names.contains(&"compress"), "{names:?}");

    // Live progress: the slow file reported part of itself before the end.
    let partial = events.iter().any(|e| {
        e.event == "progress" && e.data["index"] == 1 && e.data["received"].as_u64().is_some_and(|r| r > 0 && r < MIB as u64)
    });
    assert!(partial, "no intermediate progress for the slow file");
    // The clock ticks once a second and never moves the resume point.
    let clocks: Vec<i64> = events.iter().filter(|e| e.event == "clock").map(|e| e.data["unix_ms"].as_i64().unwrap()).collect();
    assert!(clocks.len() >= 3, "only {} clock events over a bundle that takes 4 s or more", clocks.len());
    assert!(clocks.windows(2).all(|w| w[1] > w[0]));
    assert!(events.iter().filter(|e| e.event == "clock").all(|e| e.id.is_none()));

    // Each URL ended as it should, in the events and in the state.
    let state = client.state(&id).await.unwrap();
    assert_eq!(state["status"], "ready", "{state}");
    for (index, case) in cases.iter().enumerate() {
        let file = &state["files"][index];
        match case.expect {
            Ok((name, _, size)) => {
                assert_eq!(file["status"], "done", "URL {index}: {file}");
                assert_eq!(file["name"], name, "URL {index}");
                assert_eq!(file["received"], size as u64, "URL {index}");
            }
            Err(code) => {
                assert_eq!(file["status"], "failed", "URL {index}: {file}");
                assert_eq!(file["error"], code, "URL {index}: {file}");
                assert!(file["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
    }

    // A reconnect with Last-Event-ID gets exactly the events after it.
    let kept = stored(&events);
    let resume_at = kept[3].id.clone().unwrap();
    let resumed = client.follow(&id, Some(&resume_at), Duration::from_secs(10), |_| false).await.unwrap();
    let resumed_ids: Vec<_> = stored(&resumed).iter().map(|e| e.id.clone().unwrap()).collect();
    let expected_ids: Vec<_> = kept[4..].iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(resumed_ids, expected_ids);

    // The zip holds every downloaded file, byte for byte, under safe names.
    let link = state["link"].as_str().unwrap().to_owned();
    assert_eq!(events.last().unwrap().data["link"], link.as_str());
    let response = client.get(&link).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let entries: BTreeMap<String, Vec<u8>> = zip_entries(&response.bytes().await.unwrap()).unwrap().into_iter().collect();
    let expected: BTreeMap<String, Vec<u8>> = cases
        .iter()
        .filter_map(|c| c.expect.ok())
        .map(|(name, source, size)| (name.to_owned(), content(source, size)))
        .collect();
    assert_eq!(entries.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    assert!(entries == expected, "zip contents differ from the served files");

    // Once only; a tampered or expired link is refused as nginx would.
    let again = client.get(&link).await.unwrap();
    assert_eq!(again.status(), 410);
    assert!(again.text().await.unwrap().contains("already used"));
    let tampered = link.replacen("md5=", "md5=x", 1);
    assert_eq!(client.get(&tampered).await.unwrap().status(), 403);
    let secret = std::fs::read_to_string(data_dir.join("download-secret")).unwrap();
    let path = link.split('?').next().unwrap();
    let expired = orders_signed_link::sign(path, unix_now() - 5, secret.trim());
    assert_eq!(client.get(&expired).await.unwrap().status(), 410);
}

async fn check_bad_input(base: &str, key: Option<&str>) {
    let client = BundleClient::new(base, key);
    for page in ["/", "/bundles/new"] {
        let response = client.get(page).await.unwrap();
        assert_eq!(response.status(), 200, "{page}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(response.text().await.unwrap().contains("bundle-form"));
    }
    let (status, body) = client.submit(json!({ "urls": ["ftp://x.example/a", "https://ok.example/b", "", 7] })).await.unwrap();
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["urls[0]", "urls[2]", "urls[3]"]);
    for bad in [json!({ "urls": [] }), json!({}), json!({ "urls": "https://a.example/" }), json!({ "urls": vec!["https://a.example/"; 21] })] {
        let (status, body) = client.submit(bad.clone()).await.unwrap();
        assert_eq!(status, 422, "{bad} -> {body}");
    }
    let not_json = client.client.post(format!("{base}/bundles")).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(client.client.get(format!("{base}/bundles")).send().await.unwrap().status(), 405);
    for path in ["/bundles/000000000000000000000000", "/bundles/000000000000000000000000/events", "/bundles/nope"] {
        let response = client.get(path).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.json::<Value>().await.unwrap()["message"].is_string());
    }
}

/// 10 files of 1 MiB, from POST to the zip in hand.
async fn time_ten_mib(base: &str, key: Option<&str>, files: &FileServer) -> Duration {
    let client = BundleClient::new(base, key);
    let urls: Vec<String> = (0..10).map(|i| files.url(&format!("/fast/file-{i}.bin?bytes={MIB}"))).collect();
    let started = Instant::now();
    let id = client.create(&urls).await.unwrap();
    let events = client.follow(&id, None, Duration::from_secs(60), |_| false).await.unwrap();
    let ready = events.last().unwrap();
    assert_eq!(ready.event, "ready", "{:?}", ready.data);
    let zip = client.get(ready.data["link"].as_str().unwrap()).await.unwrap().bytes().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(zip_entries(&zip).unwrap().len(), 10);
    elapsed
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_on_the_embedded_default() {
    let files = FileServer::start().await;
    let product = Product::up(ORDERS, &Backends { extra_env: bundle_env(&files), ..Backends::default() }).unwrap();
    check_bad_input(&product.url, product.admin_key.as_deref()).await;
    run_scenario(&product.url, product.admin_key.as_deref(), &files, &product.data_dir).await;
    let elapsed = time_ten_mib(&product.url, product.admin_key.as_deref(), &files).await;
    println!("bundle of 10 x 1 MiB, embedded default: {} ms end to end", elapsed.as_millis());
    let metrics = reqwest::get(format!("{}/metrics", product.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("orders_bundle_jobs_total{outcome=\"ready\"} 2"), "{metrics}");
    assert!(metrics.contains("orders_bundle_downloads_total{outcome=\"too_large\"} 1"));
}

/// Peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok());
    kib.expect("VmHWM in /proc/PID/status") * 1024
}

/// A download goes from the zip's file to the client a few chunks at a
/// time, through the in-process sidecar call and the component: the peak
/// memory of `orders up` does not grow with the zip. (While the runner
/// collected in-process answers, a 256 MiB zip took the peak up 515 MiB.)
#[tokio::test(flavor = "multi_thread")]
async fn a_large_download_streams_through_orders_up_without_growing_memory() {
    use std::io::Write;
    const ZIP: usize = 192 * MIB;
    let product = Product::up(ORDERS, &Backends::default()).unwrap();
    let file = "bundle-0123456789abcdef01234567.zip";
    let blobs = product.data_dir.join("store").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut zip = std::fs::File::create(blobs.join(file)).unwrap();
    let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    for _ in 0..ZIP / MIB {
        zip.write_all(&block).unwrap();
    }
    drop(zip);
    let secret = std::fs::read_to_string(product.data_dir.join("download-secret")).unwrap();
    let link = orders_signed_link::sign(&format!("/downloads/{file}"), unix_now() + 600, secret.trim());

    let before = peak_rss(product.process.pid());
    let mut response = reqwest::get(format!("{}{link}", product.url)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, ZIP, "the whole zip arrived");
    let grown = peak_rss(product.process.pid()).saturating_sub(before);
    assert!(grown < ZIP / 4, "peak memory grew {} MiB for a {} MiB download", grown / MIB, ZIP / MIB);
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_on_mongodb_and_redis() {
    let mongo = MongoServer::start().expect("MongoDB-wire server");
    let redis = RedisServer::start().expect("redis");
    let files = FileServer::start().await;
    let backends = Backends {
        mongo_uri: Some(mongo.uri.clone()),
        mongo_database: Some("bundles_test".into()),
        redis_url: Some(redis.url.clone()),
        extra_env: bundle_env(&files),
    };
    let product = Product::up(ORDERS, &backends).unwrap();
    run_scenario(&product.url, product.admin_key.as_deref(), &files, &product.data_dir).await;
    let elapsed = time_ten_mib(&product.url, product.admin_key.as_deref(), &files).await;
    println!("bundle of 10 x 1 MiB, MongoDB + Redis: {} ms end to end", elapsed.as_millis());
    // The queue and the events really are in Redis.
    let mut connection = redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*:events:bundles:*").query_async(&mut connection).await.unwrap();
    assert!(keys.len() >= 2, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_worker_is_killed_still_completes() {
    let files = FileServer::start().await;
    let mut env = bundle_env(&files);
    env.push(("ORDERS_FETCH_TIMEOUT_MS".into(), "20000".into()));
    env.push(("ORDERS_BUNDLE_CLAIM_TIMEOUT_MS".into(), "2000".into()));
    let backends = Backends { extra_env: env, ..Backends::default() };
    let mut product = Product::up(ORDERS, &backends).unwrap();
    let client = BundleClient::new(&product.url, product.admin_key.as_deref());
    let urls = vec![files.url(&format!("/slow/big.bin?bytes={MIB}&ms=4000")), files.url("/fast/small.txt?bytes=999")];
    let id = client.create(&urls).await.unwrap();
    // Wait until the worker is mid-download, then kill the whole process.
    let mid = client
        .follow(&id, None, Duration::from_secs(30), |e| e.event == "progress" && e.data["index"] == 0 && e.data["received"].as_u64() > Some(0))
        .await
        .unwrap();
    assert_eq!(mid.last().unwrap().event, "progress");
    product.process.kill_hard();

    let data_dir = product.data_dir.clone();
    let restarted = Product::up_in(ORDERS, &backends, &data_dir, "127.0.0.1:0").unwrap();
    let client = BundleClient::new(&restarted.url, restarted.admin_key.as_deref());
    let events = client.follow(&id, None, Duration::from_secs(60), |_| false).await.unwrap();
    let attempts: Vec<&Value> = events.iter().filter(|e| e.event == "started").map(|e| &e.data["attempt"]).collect();
    assert_eq!(attempts, [&json!(1), &json!(2)], "the job ran again after the kill");
    let ready = events.last().unwrap();
    assert_eq!(ready.event, "ready");
    let zip = client.get(ready.data["link"].as_str().unwrap()).await.unwrap().bytes().await.unwrap();
    let entries: BTreeMap<String, Vec<u8>> = zip_entries(&zip).unwrap().into_iter().collect();
    assert_eq!(entries["big.bin"], content("big.bin", MIB));
    assert_eq!(entries["small.txt"], content("small.txt", 999));
    drop(product);
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_checks_links_streams_events_and_serves_the_zip() {
    let files = FileServer::start().await;
    let cluster = Cluster::start(ORDERS, 2, &Backends { extra_env: bundle_env(&files), ..Backends::default() }).unwrap();
    let client = BundleClient::new(&cluster.url, cluster.admin_key.as_deref());
    let urls = vec![files.url(&format!("/slow/a.bin?bytes={}&ms=1500", 300_000)), files.url("/fast/b.bin?bytes=4000")];
    let id = client.create(&urls).await.unwrap();
    let events = client.follow(&id, None, Duration::from_secs(60), |_| false).await.unwrap();
    assert!(events.iter().any(|e| e.event == "progress"), "events stream through nginx as they happen");
    let link = events.last().unwrap().data["link"].as_str().unwrap().to_owned();

    let tampered = link.replacen("md5=", "md5=A", 1);
    let refused = client.get(&tampered).await.unwrap();
    assert_eq!(refused.status(), 403, "nginx refuses a bad signature itself");
    assert!(refused.json::<Value>().await.unwrap()["message"].is_string());

    let response = client.get(&link).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-accel-redirect").is_none(), "nginx consumes X-Accel-Redirect");
    let entries = zip_entries(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(client.get(&link).await.unwrap().status(), 410, "second use, refused by the API behind nginx");

    let secret = std::fs::read_to_string(cluster.data_dir.join("download-secret")).unwrap();
    let expired = orders_signed_link::sign(link.split('?').next().unwrap(), unix_now() - 5, secret.trim());
    assert_eq!(client.get(&expired).await.unwrap().status(), 410, "nginx refuses an expired link itself");
    // The internal location is not reachable from outside.
    assert_eq!(client.get(&format!("/protected-downloads/bundle-{id}.zip")).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bundle_page_in_a_real_browser() {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "run tests/browser/install.sh first (installs chromium and playwright-core)"
    );
    let files = FileServer::start().await;
    let product = Product::up(ORDERS, &Backends { extra_env: bundle_env(&files), ..Backends::default() }).unwrap();
    let mut urls: Vec<String> = (0..10).map(|i| files.url(&format!("/slow/asset-{i}.jpg?bytes={}&ms=1500", 400_000 + i * 1000))).collect();
    urls.push(files.url("/nothing/missing.png"));
    urls.push(files.url(&format!("/fast/huge.bin?bytes={}", 3 * MIB)));
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bundle-e2e");
    let _ = std::fs::remove_dir_all(&out_dir);
    let output = tokio::process::Command::new("node")
        .arg(browser_dir.join("bundle-e2e.mjs"))
        .env("BASE_URL", &product.url)
        .env("API_KEY", product.admin_key.as_deref().expect("admin key"))
        .env("BUNDLE_URLS", serde_json::to_string(&urls).unwrap())
        .env("OUT_DIR", &out_dir)
        .env("TIMEOUT_MS", "90000")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("E2E_RESULT ")).unwrap_or_else(|| panic!("no result:\n{stdout}\n{stderr}"));
    let result: Value = serde_json::from_str(line).unwrap();
    assert!(output.status.success() && result["ok"] == true, "{result:#}\n{stderr}");
    let statuses: Vec<&str> = result["files"].as_array().unwrap().iter().map(|f| f["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "done").count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "failed").count(), 2, "{statuses:?}");
    assert!(matches!(result["second_status"].as_u64(), Some(403 | 410)));
    let entries = zip_entries(&std::fs::read(out_dir.join("bundle.zip")).unwrap()).unwrap();
    assert_eq!(entries.len(), 10);
    for (name, bytes) in &entries {
        let index: usize = name.trim_start_matches("asset-").trim_end_matches(".jpg").parse().unwrap();
        assert_eq!(bytes, &content(name, 400_000 + index * 1000), "{name}");
    }
    let screenshot = out_dir.join("bundle-page.png");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    println!("screenshot of the finished page: {}", screenshot.display());
}
