//! The bundle pipeline against abusive clients and servers, on the product
//! as users start it (`orders up`, `orders cluster`), loopback only, every
//! case bounded in time: server-side request forgery through redirects and
//! names, one-time links under failures and races, floods of bundles,
//! servers that drip, retries that would never end, and what is left on disk.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use orders_testkit::bundle_client::{BundleClient, SseEvent, zip_entries};
use orders_testkit::file_server::FileServer;
use orders_testkit::product::{Backends, Cluster, Product};
use serde_json::{Value, json};

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

fn backends(files: &FileServer, extra: &[(&str, String)]) -> Backends {
    let mut settings = env(&[("ORDERS_FETCH_ALLOW", format!("127.0.0.1:{}", files.address.port()))]);
    settings.extend(env(extra));
    Backends { extra_env: settings, ..Backends::default() }
}

/// Submits `urls` and follows the bundle to its end.
async fn run_bundle(client: &BundleClient, urls: &[String], limit: Duration) -> Vec<SseEvent> {
    let id = client.create(urls).await.unwrap();
    let events = client.follow(&id, None, limit, |_| false).await.unwrap();
    assert!(matches!(events.last().map(|e| e.event.as_str()), Some("ready" | "failed")), "{:?}", events.last());
    events
}

/// The `download_failed` event of each URL index.
fn failures(events: &[SseEvent]) -> BTreeMap<u64, Value> {
    events.iter().filter(|e| e.event == "download_failed").map(|e| (e.data["index"].as_u64().unwrap(), e.data.clone())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_ssrf_form_is_refused_through_redirects_and_names() {
    let files = FileServer::start().await;
    let port = files.address.port();
    // Names the worker resolves to each special-purpose form (like curl
    // --resolve; the guard checks what they resolve to like any DNS answer).
    let pinned: &[(&str, &str)] = &[
        ("compat.test", "::7f00:1"),
        ("translated.test", "::ffff:0:7f00:1"),
        ("nat64-local.test", "64:ff9b:1::a00:1"),
        ("teredo.test", "2001::1"),
        ("ietf.test", "192.0.0.8"),
        ("mapped-metadata.test", "::ffff:169.254.169.254"),
        ("six-to-four.test", "2002:a00:1::1"),
        ("benchmark.test", "198.18.0.1"),
        ("discard.test", "100::1"),
    ];
    let resolve = pinned.iter().map(|(name, address)| format!("{name}={address}")).collect::<Vec<_>>().join(",");
    let product = Product::up(
        ORDERS,
        &backends(&files, &[
            ("ORDERS_FETCH_RESOLVE", resolve),
            ("ORDERS_FETCH_ALLOW", format!("127.0.0.1:{port},localhost")),
            ("ORDERS_BUNDLE_MAX_URLS", "40".into()),
        ]),
    )
    .unwrap();
    let literals = ["[::7f00:1]", "[::ffff:0:7f00:1]", "[64:ff9b:1::a00:1]", "[2001::1]", "192.0.0.8", "[2002:a00:1::1]", "198.18.0.1", "[100::1]"];
    // (URL, the internal address behind it, which no message may name)
    let mut cases: Vec<(String, String)> = Vec::new();
    for literal in literals {
        cases.push((files.url(&format!("/redirect?to=http://{literal}:{port}/secret")), literal.trim_matches(['[', ']']).to_owned()));
    }
    for (name, address) in pinned {
        cases.push((format!("http://{name}:{port}/secret"), (*address).to_owned()));
        cases.push((files.url(&format!("/redirect?to=http://{name}:{port}/secret")), (*address).to_owned()));
    }
    // Through the system resolver: /etc/hosts says localhost is loopback;
    // allowed without a port, it is allowed on port 80 only.
    cases.push((format!("http://localhost:{port}/fast/allowed-host-other-port.bin"), "127.0.0.1".into()));
    cases.push((files.url(&format!("/redirect?to=http://localhost:{port}/fast/x")), "127.0.0.1".into()));
    let mut urls: Vec<String> = cases.iter().map(|(url, _)| url.clone()).collect();
    urls.push(files.url("/fast/the-one-good-file.bin?bytes=1000"));

    let client = BundleClient::new(&product.url, product.admin_key.as_deref());
    let started = Instant::now();
    let events = run_bundle(&client, &urls, Duration::from_secs(60)).await;
    let failed = failures(&events);
    for (index, (url, address)) in cases.iter().enumerate() {
        let failure = failed.get(&(index as u64)).unwrap_or_else(|| panic!("{url} was not refused"));
        assert_eq!(failure["error"], "forbidden_address", "{url}: {failure}");
        let message = failure["message"].as_str().unwrap();
        assert!(message.contains("not a public address"), "{url}: {message}");
        assert!(!message.contains(address.as_str()), "{url}: the message reveals {address}: {message}");
    }
    assert_eq!(events.last().unwrap().event, "ready", "the public file still makes a bundle");
    println!("{} SSRF forms refused (redirects, pinned names, /etc/hosts) in {} ms", cases.len(), started.elapsed().as_millis());
    // The operator's log keeps the detail the client does not get.
    let log = product.log();
    assert!(log.contains("refused a fetch to a special-purpose address") && log.contains("RFC 4380"), "the log names the range");
}

/// The zip of a finished bundle: its link and where the blob lies.
async fn finished_bundle(client: &BundleClient, files: &FileServer, data_dir: &Path, bytes: usize) -> (String, std::path::PathBuf) {
    let urls = vec![files.url(&format!("/fast/payload.bin?bytes={bytes}"))];
    let events = run_bundle(client, &urls, Duration::from_secs(60)).await;
    let ready = events.last().unwrap();
    assert_eq!(ready.event, "ready", "{:?}", ready.data);
    let link = ready.data["link"].as_str().unwrap().to_owned();
    let file = link.trim_start_matches("/downloads/").split('?').next().unwrap().to_owned();
    (link, data_dir.join("store/blobs").join(file))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_is_spent_by_delivery_not_by_a_failed_attempt() {
    let files = FileServer::start().await;
    let product = Product::up(ORDERS, &backends(&files, &[])).unwrap();
    let client = BundleClient::new(&product.url, product.admin_key.as_deref());
    let (link, blob) = finished_bundle(&client, &files, &product.data_dir, 300_000).await;
    let aside = blob.with_extension("aside");

    // The blob store loses the file for a while: 503, the link still works.
    std::fs::rename(&blob, &aside).unwrap();
    let missing = client.get(&link).await.unwrap();
    assert_eq!(missing.status(), 503);
    assert!(missing.headers().contains_key("retry-after"));
    assert!(missing.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("link still works"));
    // The file cannot be read (a directory where it should be): 503 again.
    std::fs::create_dir(&blob).unwrap();
    let unreadable = client.get(&link).await.unwrap();
    assert_eq!(unreadable.status(), 503, "{}", unreadable.text().await.unwrap());
    std::fs::remove_dir(&blob).unwrap();
    std::fs::rename(&aside, &blob).unwrap();

    let delivered = client.get(&link).await.unwrap();
    assert_eq!(delivered.status(), 200);
    let zip = delivered.bytes().await.unwrap();
    assert_eq!(zip_entries(&zip).unwrap()[0].1.len(), 300_000, "the whole zip, after two failures on our side");
    let again = client.get(&link).await.unwrap();
    assert_eq!(again.status(), 410, "a completed download spends the link");

    // Several clients race for one link: exactly one completes.
    let (link, blob) = finished_bundle(&client, &files, &product.data_dir, 2_000_000).await;
    let length = std::fs::metadata(&blob).unwrap().len() as usize;
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (client, link) = (reqwest::Client::new(), format!("{}{link}", product.url));
            tokio::spawn(async move {
                let response = client.get(link).send().await.unwrap();
                let status = response.status().as_u16();
                let body = response.bytes().await.map(|b| b.len()).unwrap_or(0);
                (status, body)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.unwrap());
    }
    let completed = outcomes.iter().filter(|(status, body)| *status == 200 && *body == length).count();
    assert_eq!(completed, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|(status, _)| matches!(status, 200 | 409 | 410)), "{outcomes:?}");
    println!("8 racing downloads of one link: {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_cannot_flood_the_queue() {
    let files = FileServer::start().await;
    // No worker: every accepted bundle stays queued, so the counts are exact.
    let product = Product::up(
        ORDERS,
        &backends(&files, &[
            ("ORDERS_BUNDLE_WORKERS", "0".into()),
            ("ORDERS_BUNDLE_MAX_QUEUED", "4".into()),
            ("ORDERS_BUNDLE_MAX_QUEUED_PER_CLIENT", "2".into()),
        ]),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let submit = |client: Option<&'static str>| {
        let mut request = http
            .post(format!("{}/bundles", product.url))
            .bearer_auth(product.admin_key.as_deref().expect("admin key"))
            .json(&json!({ "urls": [files.url("/fast/a.bin")] }));
        if let Some(address) = client {
            // What nginx in front of the instance says about the client.
            request = request.header("x-forwarded-for", address);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (status, retry_after, response.json::<Value>().await.unwrap())
        }
    };
    let started = Instant::now();
    for _ in 0..2 {
        assert_eq!(submit(None).await.0, 202);
    }
    let (status, retry_after, body) = submit(None).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some() && body["message"].as_str().unwrap().contains("your bundles"), "{body}");
    for _ in 0..2 {
        assert_eq!(submit(Some("198.51.100.1")).await.0, 202, "another client has its own share");
    }
    let (status, retry_after, body) = submit(Some("198.51.100.2")).await;
    assert_eq!(status, 503, "the queue as a whole is full: {body}");
    assert!(retry_after.is_some_and(|r| r.parse::<u32>().unwrap() >= 1), "{body}");
    // Refused floods leave the rest of the API alone.
    let mut statuses = Vec::new();
    for _ in 0..50 {
        statuses.push(submit(Some("198.51.100.3")).await.0);
    }
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert_eq!(product.api().get("/orders?limit=1").await.status.as_u16(), 200);
    println!("flood: 4 accepted, 429 per client, 503 overall; 54 submissions answered in {} ms", started.elapsed().as_millis());
}

#[tokio::test(flavor = "multi_thread")]
async fn drips_deadlines_and_retries_are_bounded() {
    let files = FileServer::start().await;
    let product = Product::up(
        ORDERS,
        &backends(&files, &[
            ("ORDERS_FETCH_MIN_BYTES_PER_SEC", "2000".into()),
            ("ORDERS_BUNDLE_DEADLINE_MS", "9000".into()),
            ("ORDERS_FETCH_TIMEOUT_MS", "60000".into()),
            ("ORDERS_BUNDLE_MAX_RETRIES", "2".into()),
            // Every URL at once, so the failing ones all ask before the deadline.
            ("ORDERS_BUNDLE_DOWNLOADS", "8".into()),
        ]),
    )
    .unwrap();
    let client = BundleClient::new(&product.url, product.admin_key.as_deref());
    let mut urls = vec![
        // 100 bytes/s: below the floor.
        files.url("/drip/trickle.bin?bytes=100000&every_ms=100&chunk=10"),
        // 50 KB/s, above the floor, but 40 s long: the bundle's deadline ends it.
        files.url("/slow/long.bin?bytes=2000000&ms=40000"),
        files.url("/fast/quick.bin?bytes=5000"),
    ];
    urls.extend((0..4).map(|n| files.url(&format!("/fail/always-{n}"))));
    let started = Instant::now();
    let events = run_bundle(&client, &urls, Duration::from_secs(40)).await;
    let elapsed = started.elapsed();
    let failed = failures(&events);
    assert_eq!(failed[&0]["error"], "too_slow", "{}", failed[&0]);
    assert_eq!(failed[&1]["error"], "bundle_deadline", "{}", failed[&1]);
    assert!(!failed.contains_key(&2), "the quick file made it");
    // Four URLs that always fail share two retries: six requests, not twelve.
    let hits: u32 = (0..4).map(|n| files.hits(&format!("fail/always-{n}"))).sum();
    assert_eq!(hits, 6, "retries across the whole bundle are bounded");
    assert_eq!(events.last().unwrap().event, "ready");
    assert!(elapsed < Duration::from_secs(20), "the bundle took {elapsed:?}");
    println!("drip cut off, deadline of 9 s held, {hits} requests to failing URLs; bundle done in {} ms", elapsed.as_millis());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Every file below `dir` (not descending into `skip`), with its mode.
fn files_below(dir: &Path, skip: &[&str]) -> Vec<(std::path::PathBuf, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if skip.iter().any(|s| path.ends_with(s)) {
            continue;
        }
        if path.is_dir() {
            found.push((path.clone(), mode(&path)));
            found.extend(files_below(&path, skip));
        } else {
            found.push((path.clone(), mode(&path)));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_customer_data_are_private_on_disk() {
    let files = FileServer::start().await;
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    // As an older version or a loose umask would have left it.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let product = Product::up_in(ORDERS, &backends(&files, &[]), &data_dir, "127.0.0.1:0").unwrap();
    let client = BundleClient::new(&product.url, product.admin_key.as_deref());
    finished_bundle(&client, &files, &data_dir, 1000).await;
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join("download-secret")), 0o600);
    let store = files_below(&data_dir.join("store"), &[]);
    assert!(store.iter().any(|(p, _)| p.ends_with("orders.sqlite3")) && store.iter().any(|(p, _)| p.to_string_lossy().contains("bundle-")));
    for (path, found) in &store {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*found, expected, "{}", path.display());
    }
    drop(product);

    let cluster = Cluster::start(ORDERS, 1, &backends(&files, &[])).unwrap();
    assert_eq!(mode(&cluster.data_dir), 0o700);
    assert_eq!(mode(&cluster.data_dir.join("nginx/nginx.conf")), 0o600, "it holds the link secret");
    assert_eq!(mode(&cluster.data_dir.join("download-secret")), 0o600);
    for (path, found) in files_below(&cluster.data_dir.join("store"), &[]) {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(found, expected, "{}", path.display());
    }
}
