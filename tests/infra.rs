//! The deploy artefacts under infra/ are valid, and agree with the product:
//!
//! * nginx: infra/nginx/orders.conf (as shipped, with TLS, with the Compose
//!   files) and the `orders cluster` template pass `nginx -t`; the shipped
//!   config, run in front of the product and a peer that drops requests,
//!   retries only what is safe, sets request ids, trusts X-Forwarded-For only
//!   from the balancer, keeps /metrics internal and checks signed links.
//! * Kubernetes: infra/k8s/validate.py (Kubernetes schemas of the PyPI package
//!   kubernetes-validate, the vendored SpinApp schemas, cross-references),
//!   on the sources and on what `kubectl kustomize` renders.
//! * Compose: `docker compose config`, and services, dependencies, files and
//!   variables that exist; the sidecar's Dockerfile (hadolint and structure).
//! * Metrics: every metric the Grafana dashboard queries is exported by the
//!   product's /metrics, with the labels it groups by; its queries parse as
//!   PromQL; the Prometheus configurations name their jobs.
//! * The GitHub workflow runs .ci/run.
//!
//! The validators come from Debian (nginx, openssl) and PyPI (a virtualenv in
//! ~/.cache/orders-ci/venv, which tests/install.sh creates from
//! tests/validators.txt; ./test.sh runs it). A test
//! whose validator is missing fails under CI and is skipped elsewhere, saying
//! how to install it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orders_testkit::process::{OwnedProcess, find_binary, free_port, signal};
use orders_testkit::product::{Backends, Product};
use orders_testkit::repo_root;
use serde_json::{Value, json};

/// What the Python side of these tests needs: one requirement per line, the
/// same file tests/install.sh installs.
const VALIDATORS: &str = include_str!("validators.txt");

// --- validators --------------------------------------------------------------

fn venv() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/orders-ci/venv")
}

/// The virtualenv's Python when .ci/run made it, python3 otherwise.
fn python() -> PathBuf {
    let candidate = venv().join("bin/python");
    if candidate.is_file() { candidate } else { PathBuf::from("python3") }
}

/// A command of the virtualenv, or of PATH.
fn installed(name: &str) -> Option<PathBuf> {
    let candidate = venv().join("bin").join(name);
    if candidate.is_file() { Some(candidate) } else { find_binary(name, &[PathBuf::from("/usr/sbin")]) }
}

/// A validator this machine lacks: a failure under CI, where .ci/run installs
/// it, and a skip with a message elsewhere.
fn missing(what: &str, install: &str) {
    let message = format!("{what} is not available; install it with: {install}");
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
}

fn pip_install() -> String {
    let packages: Vec<&str> = VALIDATORS.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()).collect();
    format!("tests/install.sh validators (or: python3 -m venv ~/.cache/orders-ci/venv && ~/.cache/orders-ci/venv/bin/pip install {})", packages.join(" "))
}

/// Whether the Python in use can import these modules.
fn python_has(modules: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every document of a YAML file, as JSON (PyYAML).
fn yaml(path: &Path) -> Vec<Value> {
    let output = run(Command::new(python()).arg("-c").arg(
        "import json, sys, yaml\njson.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout, default=str)",
    ).arg(path));
    assert!(output.status.success(), "{} is not valid YAML:\n{}", path.display(), text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON from PyYAML")
}

fn yaml_one(path: &Path) -> Value {
    let mut docs = yaml(path);
    assert_eq!(docs.len(), 1, "{} should hold one YAML document", path.display());
    docs.remove(0)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `text` with `from` replaced, which must be there (the test follows the file).
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in the config");
    text.replace(from, to)
}

// --- nginx -----------------------------------------------------------------

fn nginx() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.is_file() { Some(debian) } else { find_binary("nginx", &[]) }
}

/// infra/nginx copied to a fresh directory, used as the prefix too.
fn staged_nginx() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("infra/nginx"), dir.path());
    dir
}

fn nginx_t(nginx: &Path, prefix: &Path, config: &Path) {
    let mut prefix_arg = prefix.as_os_str().to_owned();
    prefix_arg.push("/");
    let output = run(Command::new(nginx).arg("-t").arg("-p").arg(prefix_arg).arg("-c").arg(config));
    let log = text(&output.stderr);
    assert!(output.status.success() && log.contains("test is successful"), "nginx -t {}:\n{log}", config.display());
    assert!(!log.contains("[emerg]") && !log.contains("[alert]"), "nginx -t {}:\n{log}", config.display());
}

#[test]
fn nginx_production_config_passes_nginx_t() {
    let Some(nginx) = nginx() else { return missing("nginx", "apt-get install nginx") };

    // As shipped: upstreams on 127.0.0.1, nothing trusted, no TLS, no secret.
    let plain = staged_nginx();
    nginx_t(&nginx, plain.path(), &plain.path().join("orders.conf"));

    // With TLS terminated here and the download secret set.
    let Some(openssl) = find_binary("openssl", &[]) else { return missing("openssl", "apt-get install openssl") };
    let tls = staged_nginx();
    std::fs::create_dir_all(tls.path().join("tls")).unwrap();
    let made = run(Command::new(openssl)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=orders.test"])
        .arg("-keyout").arg(tls.path().join("tls/privkey.pem"))
        .arg("-out").arg(tls.path().join("tls/fullchain.pem")));
    assert!(made.status.success(), "openssl req: {}", text(&made.stderr));
    let config = read(&tls.path().join("orders.conf"));
    std::fs::write(tls.path().join("orders.conf"), replace(&config, "# include orders-tls.conf;", "include orders-tls.conf;")).unwrap();
    std::fs::copy(tls.path().join("orders.d/download-secret.conf.example"), tls.path().join("orders.d/download-secret.conf")).unwrap();
    nginx_t(&nginx, tls.path(), &tls.path().join("orders.conf"));

    // With the files Docker Compose mounts over the defaults (service names
    // resolved here as loopback, which nginx -t needs).
    let compose = staged_nginx();
    let upstreams = read(&repo_root().join("infra/compose/nginx-upstreams.conf"));
    let mut servers = 0;
    let upstreams: String = upstreams
        .lines()
        .map(|line| match line.trim_start().strip_prefix("server ") {
            Some(rest) => {
                servers += 1;
                let port = rest.split_whitespace().next().unwrap().rsplit(':').next().unwrap().to_owned();
                format!("server 127.0.0.1:{port} {}\n", rest.split_once(' ').map(|(_, r)| r).unwrap_or(";"))
            }
            None => format!("{line}\n"),
        })
        .collect();
    assert!(servers >= 2, "nginx-upstreams.conf should list the instances");
    std::fs::write(compose.path().join("upstreams.conf"), upstreams).unwrap();
    std::fs::copy(repo_root().join("infra/compose/nginx-internal-networks.conf"), compose.path().join("internal-networks.conf")).unwrap();
    nginx_t(&nginx, compose.path(), &compose.path().join("orders.conf"));
}

#[test]
fn nginx_cluster_template_passes_nginx_t() {
    let Some(nginx) = nginx() else { return missing("nginx", "apt-get install nginx") };
    let dir = tempfile::tempdir().unwrap();
    let template = read(&repo_root().join("infra/nginx/cluster.conf.template"));
    let rendered = template
        .replace("{{prefix}}", &dir.path().display().to_string())
        .replace("{{listen}}", &format!("127.0.0.1:{}", free_port()))
        .replace("{{upstreams}}", "        server 127.0.0.1:9 max_fails=3 fail_timeout=5s;")
        .replace("{{download_secret}}", "a-secret-of-the-test-0123")
        .replace("{{blobs}}", &dir.path().join("blobs").display().to_string())
        .replace("{{user}}", "")
        .replace("{{read_timeout}}", "6000ms");
    assert!(!rendered.contains("{{"), "a placeholder is left:\n{rendered}");
    let config = dir.path().join("cluster.conf");
    std::fs::write(&config, rendered).unwrap();
    nginx_t(&nginx, dir.path(), &config);
}

/// A peer that reads each request head and closes without answering, as an
/// instance that dies mid-request does; it keeps the heads it saw.
struct Dropper {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Dropper {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut received = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    received.extend_from_slice(&chunk[..n]);
                    if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                        received.truncate(end);
                        break;
                    }
                }
                if !received.is_empty() {
                    seen.lock().unwrap().push(String::from_utf8_lossy(&received).into_owned());
                }
            }
        });
        Self { port, heads }
    }

    fn count(&self, request_line_start: &str) -> usize {
        self.heads.lock().unwrap().iter().filter(|h| h.starts_with(request_line_start)).count()
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("port in URL")
}

fn wait_for_port(port: u16, process: &mut OwnedProcess, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("nginx exited ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "nginx did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn order_body(tag: &str) -> Value {
    json!({"product": format!("edge {tag}"), "quantity": 1, "customer_name": "a", "customer_address": "b"})
}

/// An answer nginx made itself, in the API's JSON shape: the status, a
/// JSON body with a message, and the request id as on every answer.
async fn assert_json_error(response: reqwest::Response, status: u16, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("application/json"), "{what}: content-type {content_type:?}");
    assert!(response.headers().get("x-request-id").is_some(), "{what}: no X-Request-Id");
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap_or_else(|e| panic!("{what}: body not JSON: {e}"));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
}

fn is_nginx_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_production_config_in_front_of_the_product() {
    let Some(nginx) = nginx() else { return missing("nginx", "apt-get install nginx") };
    let secret = "test-download-secret-0123456789abcdef";
    let backends = Backends { extra_env: vec![("ORDERS_DOWNLOAD_SECRET".into(), secret.into())], ..Backends::default() };
    let product = Product::up(env!("CARGO_BIN_EXE_orders"), &backends).expect("orders up");
    let dropper = Dropper::start();

    // The shipped config, with this test's addresses: the instances are the
    // dropper and the product (never marked down, so every second attempt
    // meets the dropper), and this test is the load balancer.
    let dir = staged_nginx();
    let port = free_port();
    // The product's own blob store, shared with nginx as in production: the
    // API checks the zip is there before it spends the link (ADR 0009).
    let blobs = product.data_dir.join("store/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    // Where the sidecar would have put a bundle's zip.
    let zip = "bundle-0123456789abcdef01234567.zip";
    std::fs::write(blobs.join(zip), "signed content\n").unwrap();
    let mut config = read(&dir.path().join("orders.conf"));
    config = replace(&config, "worker_processes auto;", "worker_processes 1;");
    config = replace(&config, "listen 80 default_server", &format!("listen 127.0.0.1:{port} default_server"));
    config = replace(&config, "alias /var/lib/orders/blobs/;", &format!("alias {}/;", blobs.display()));
    std::fs::write(dir.path().join("orders.conf"), config).unwrap();
    std::fs::write(
        dir.path().join("upstreams.conf"),
        format!("server 127.0.0.1:{} max_fails=0;\nserver 127.0.0.1:{} max_fails=0;\n", dropper.port, port_of(&product.url)),
    )
    .unwrap();
    std::fs::write(dir.path().join("trusted-proxies.conf"), "set_real_ip_from 127.0.0.1;\n").unwrap();

    let error_log = dir.path().join("nginx.stderr");
    let access_log = dir.path().join("nginx.stdout");
    let mut prefix = dir.path().as_os_str().to_owned();
    prefix.push("/");
    let child = Command::new(&nginx)
        .arg("-p").arg(&prefix)
        .arg("-c").arg(dir.path().join("orders.conf"))
        // Workers read the blobs in this test's private temporary directory.
        .args(["-g", "daemon off; user root;"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&access_log).unwrap())
        .stderr(std::fs::File::create(&error_log).unwrap())
        .spawn()
        .expect("start nginx");
    let mut process = OwnedProcess { child, name: "nginx".into() };
    wait_for_port(port, &mut process, &error_log);

    let base = format!("http://127.0.0.1:{port}");
    // The admin key: every orders route needs one (issue 12).
    let client = orders_testkit::contract::client_with_key(product.admin_key.as_deref(), Some(Duration::from_secs(30)));
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = client.get(format!("{base}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };

    // Idempotent requests are retried on the next instance.
    for i in 0..6 {
        let response = get(&format!("/orders?probe=get-{i}"), &[]).await.unwrap();
        assert_eq!(response.status(), 200, "GET /orders through nginx");
    }
    assert!(dropper.count("GET /orders?probe=get-") >= 1, "the dropper should have met a GET");

    // A POST without Idempotency-Key that reached an instance is never sent
    // to another one: it fails with 502 instead (and nginx's 418 stays inside).
    let before = dropper.count("POST /orders");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = client.post(format!("{base}/orders")).json(&order_body(&format!("unkeyed-{i}"))).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    let failed = statuses.iter().filter(|s| **s == 502).count();
    assert!(statuses.iter().all(|s| *s == 201 || *s == 502), "unkeyed POST statuses: {statuses:?}");
    assert_eq!(dropper.count("POST /orders") - before, failed, "an unkeyed POST was sent to a second instance: {statuses:?}");
    assert!(failed >= 1, "some unkeyed POST should have met the dropper: {statuses:?}");
    // nginx's 502 is JSON too; send unkeyed POSTs until one meets the dropper.
    let mut met_the_dropper = false;
    for i in 0..12 {
        let response = client.post(format!("{base}/orders")).json(&order_body(&format!("unkeyed-json-{i}"))).send().await.unwrap();
        if response.status() == 502 {
            assert_json_error(response, 502, "an unkeyed POST that met a dropping instance").await;
            met_the_dropper = true;
            break;
        }
    }
    assert!(met_the_dropper, "no unkeyed POST of 12 met the dropper");

    // With Idempotency-Key it is retried: every one succeeds.
    let before = dropper.count("POST /orders");
    for i in 0..6 {
        let key = format!("edge-key-{i}-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos());
        let response = client
            .post(format!("{base}/orders"))
            .header("idempotency-key", &key)
            .json(&order_body(&format!("keyed-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "keyed POST through nginx");
    }
    assert!(dropper.count("POST /orders") > before, "some keyed POST should have been retried");

    // Request ids: a sane one passes through (to the instance as well), a
    // missing or malformed one is made here; one header on every response.
    for i in 0..6 {
        let response = get(&format!("/orders?probe=rid-{i}"), &[("x-request-id", "edge-trace-42"), ("x-forwarded-for", "198.51.100.7")]).await.unwrap();
        let ids: Vec<_> = response.headers().get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "one X-Request-Id: {ids:?}");
        assert_eq!(ids[0], "edge-trace-42");
    }
    let heads = dropper.heads.lock().unwrap().clone();
    let seen = heads.iter().find(|h| h.starts_with("GET /orders?probe=rid-")).expect("the dropper should have met a probe");
    let seen_lower = seen.to_ascii_lowercase();
    assert!(seen_lower.contains("\r\nx-request-id: edge-trace-42\r\n"), "request id to the instance:\n{seen}");
    assert!(seen_lower.contains("\r\nx-forwarded-for: 198.51.100.7\r\n"), "client address to the instance:\n{seen}");
    for given in [None, Some("no spaces allowed"), Some(&*"x".repeat(129))] {
        let headers: Vec<(&str, &str)> = given.map(|g| ("x-request-id", g)).into_iter().collect();
        let response = get("/healthz", &headers).await.unwrap();
        let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(is_nginx_request_id(&id), "X-Request-Id {id:?} for {given:?}");
    }
    let denied = get("/metrics", &[("x-forwarded-for", "203.0.113.9")]).await.unwrap();
    let denied_id = denied.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(is_nginx_request_id(&denied_id), "nginx's own answers carry a request id too");

    // /metrics: internal clients only, the client being the address the
    // balancer reports (the last one not from the balancer itself).
    assert_json_error(denied, 403, "/metrics for a public client").await;
    let forged = get("/metrics", &[("x-forwarded-for", "10.0.0.5, 203.0.113.9")]).await.unwrap();
    assert_eq!(forged.status(), 403, "/metrics with a forged internal address in front");
    let internal = get("/metrics", &[("x-forwarded-for", "10.0.0.5")]).await.unwrap();
    assert_eq!(internal.status(), 200, "/metrics for an internal client");
    assert!(internal.text().await.unwrap().contains("orders_http_requests_total"), "the instance's metrics");
    assert_eq!(get("/nginx_status", &[("x-forwarded-for", "203.0.113.9")]).await.unwrap().status(), 403);
    let status = get("/nginx_status", &[]).await.unwrap();
    assert_eq!(status.status(), 200);
    assert!(status.text().await.unwrap().contains("Active connections"));

    // Bodies over 1 MiB stop at the edge.
    let large = client.post(format!("{base}/orders")).header("content-type", "application/json").body(vec![b' '; 1_100_000]).send().await.unwrap();
    assert_json_error(large, 413, "a body over 1 MiB").await;
    // A request line nginx cannot parse never reaches an instance.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut raw, b"GET /orders HTTP/1.1 junk\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-type: application/json") && answer.contains("{\"message\":"), "{answer}");

    // Signed downloads: off (503) until a secret is set, then 403 for a bad
    // signature, 410 once expired, checked by nginx; a good one reaches the
    // API, which takes the one-time mark and hands the file back to nginx
    // by X-Accel-Redirect (410 the second time); the X-Accel location is internal.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let link = |expires: u64| {
        let signature = base64url(&md5(format!("{expires}/downloads/{zip} {secret}").as_bytes()));
        format!("/downloads/{zip}?md5={signature}&expires={expires}")
    };
    assert_json_error(get(&link(now + 300), &[]).await.unwrap(), 503, "downloads without a secret").await;
    std::fs::write(dir.path().join("orders.d/download-secret.conf"), format!("set $orders_download_secret \"{secret}\";\n")).unwrap();
    signal(process.pid(), 1); // SIGHUP: reload
    let deadline = Instant::now() + Duration::from_secs(10);
    let valid = loop {
        // A keep-alive connection to a worker the reload retires may close
        // under the request: that is the reload, not an answer.
        let response = match get(&link(now + 300), &[]).await {
            Err(error) if Instant::now() < deadline && (error.is_connect() || error.is_request()) => None,
            answer => Some(answer.unwrap()),
        };
        if let Some(response) = response.filter(|r| r.status() != 503 || Instant::now() > deadline) {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(valid.status(), 200, "a valid signed link");
    assert!(valid.headers().get("x-accel-redirect").is_none());
    assert_eq!(valid.text().await.unwrap(), "signed content\n");
    assert_eq!(get(&link(now + 300), &[]).await.unwrap().status(), 410, "a used link");
    let tampered = link(now + 300).replace("expires=", "expires=1");
    assert_json_error(get(&tampered, &[]).await.unwrap(), 403, "a changed expiry").await;
    assert_eq!(get(&format!("/downloads/{zip}"), &[]).await.unwrap().status(), 403, "no signature");
    assert_json_error(get(&link(now - 10), &[]).await.unwrap(), 410, "an expired link").await;
    let posted = client.post(format!("{base}{}", link(now + 300))).body("x").send().await.unwrap();
    assert_eq!(posted.status(), 403, "downloads take GET only");
    assert_json_error(get(&format!("/protected-downloads/{zip}"), &[]).await.unwrap(), 404, "internal location").await;

    // The access log: one JSON object per request, with the request id.
    drop(process);
    let log = read(&access_log);
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line {l:?}: {e}"))).collect();
    assert!(lines.iter().any(|l| l["request_id"] == "edge-trace-42" && l["status"] == 200), "access log:\n{log}");
    assert!(lines.iter().all(|l| l["request_id"].as_str().is_some_and(|id| !id.is_empty())));
}

/// MD5 (RFC 1321), for nginx's secure_link signatures.
fn md5(input: &[u8]) -> [u8; 16] {
    const SHIFTS: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
        4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let constants: Vec<u32> = (0..64).map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32).collect();
    let mut state = [0x6745_2301u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut message = input.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((input.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in message.chunks(64) {
        let words: Vec<u32> = block.chunks(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = f.wrapping_add(a).wrapping_add(constants[i]).wrapping_add(words[g]).rotate_left(SHIFTS[i]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (i, s) in state.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&s.to_le_bytes());
    }
    out
}

/// Base64 with the URL alphabet and no padding, as secure_link expects.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn md5_and_base64url_match_known_values() {
    let hex: String = md5(b"").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "d41d8cd98f00b204e9800998ecf8427e");
    let hex: String = md5(b"The quick brown fox jumps over the lazy dog").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "9e107d9d372bb6826bd81d3542a419d6");
    assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    assert_eq!(base64url(b"abc"), "YWJj");
}

// --- Kubernetes --------------------------------------------------------------

#[test]
fn kubernetes_manifests_are_valid() {
    if !python_has("yaml, jsonschema, kubernetes_validate") {
        return missing("Python with PyYAML, jsonschema and kubernetes-validate", &pip_install());
    }
    let Some(kubectl) = installed("kubectl") else { return missing("kubectl (for kustomize)", &pip_install()) };
    let k8s = repo_root().join("infra/k8s");

    // What `kubectl apply -k infra/k8s` would send, and its sources.
    let kustomized = run(Command::new(kubectl).arg("kustomize").arg(&k8s));
    assert!(kustomized.status.success(), "kubectl kustomize infra/k8s:\n{}", text(&kustomized.stderr));
    let rendered_text = text(&kustomized.stdout);
    for image in ["image: ghcr.io/", "namespace: orders", "name: mongo-init-script-"] {
        assert!(rendered_text.contains(image), "the rendered kustomization should contain {image:?}");
    }
    assert!(!rendered_text.contains("image: orders-api") && !rendered_text.contains("image: orders-sidecar"), "images left unset");
    let rendered = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rendered.path(), &kustomized.stdout).unwrap();
    let output = run(Command::new(python()).arg(k8s.join("validate.py")).arg("--rendered").arg(rendered.path()));
    assert!(output.status.success(), "infra/k8s/validate.py:\n{}{}", text(&output.stdout), text(&output.stderr));
    println!("{}", text(&output.stdout));

    // The validator catches what the operator would refuse.
    let broken = tempfile::tempdir().unwrap();
    copy_dir(&k8s, broken.path());
    let spinapp = read(&broken.path().join("spinapp.yaml"));
    std::fs::write(broken.path().join("spinapp.yaml"), replace(&spinapp, "  enableAutoscaling: true\n", "  enableAutoscaling: true\n  replicas: 3\n")).unwrap();
    let sidecar = read(&broken.path().join("sidecar.yaml"));
    std::fs::write(broken.path().join("sidecar.yaml"), replace(&sidecar, "key: redis-url", "key: redis_url")).unwrap();
    let output = run(Command::new(python()).arg(k8s.join("validate.py")).arg(broken.path()));
    let errors = text(&output.stderr);
    assert!(!output.status.success(), "broken manifests passed:\n{}", text(&output.stdout));
    assert!(errors.contains("replicas cannot be set when enableAutoscaling is true"), "{errors}");
    assert!(errors.contains("no key 'redis_url'"), "{errors}");
}

// --- Compose and the image -------------------------------------------------

fn as_list(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        Value::Object(map) => map.keys().cloned().collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `${NAME...}` interpolations of a Compose file, with whether they are required (`:?`).
fn interpolations(text: &str) -> BTreeMap<String, bool> {
    let mut found = BTreeMap::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').unwrap_or(after.len());
        let inner = &after[..end];
        let name: String = inner.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let preceded_by_dollar = start > 0 && rest.as_bytes()[start - 1] == b'$';
        if !name.is_empty() && !preceded_by_dollar {
            *found.entry(name.clone()).or_insert(false) |= inner[name.len()..].starts_with(":?");
        }
        rest = &after[end..];
    }
    found
}

#[test]
fn compose_file_resolves_and_references_exist() {
    if !python_has("yaml") {
        return missing("Python with PyYAML", &pip_install());
    }
    let root = repo_root();
    let compose_dir = root.join("infra/compose");
    let compose_path = compose_dir.join("docker-compose.yml");
    let compose = yaml_one(&compose_path);
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();

    for wanted in ["mongo1", "mongo2", "mongo3", "mongo-init", "redis", "sidecar", "nginx", "prometheus", "grafana"] {
        assert!(names.contains(wanted), "service {wanted} is missing: {names:?}");
    }
    let instances: Vec<&str> = names.iter().copied().filter(|n| n.starts_with("spin-")).collect();
    assert!(instances.len() >= 2, "several Spin instances: {instances:?}");

    let declared_volumes: HashSet<String> = compose["volumes"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let declared_networks: HashSet<String> = compose["networks"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let dockerfile_healthcheck = |service: &Value| -> bool {
        let build = &service["build"];
        let Some(context) = build["context"].as_str() else { return false };
        let dockerfile = compose_dir.join(context).join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
        std::fs::read_to_string(dockerfile).is_ok_and(|d| d.lines().any(|l| l.trim_start().starts_with("HEALTHCHECK ")))
    };

    for (name, service) in services {
        assert!(service["image"].is_string() || service["build"].is_object(), "{name}: image or build");
        for (target, condition) in service["depends_on"].as_object().into_iter().flatten() {
            let Some(dependency) = services.get(target) else { panic!("{name} depends on unknown service {target}") };
            match condition["condition"].as_str().unwrap_or("service_started") {
                "service_healthy" => assert!(
                    dependency["healthcheck"].is_object() || dockerfile_healthcheck(dependency),
                    "{name} waits for {target} to be healthy, which has no healthcheck"
                ),
                "service_completed_successfully" => assert!(
                    dependency["restart"].is_null() || dependency["restart"] == "no",
                    "{target} is a one-shot for {name} and must not restart"
                ),
                "service_started" => {}
                other => panic!("{name}: unknown depends_on condition {other}"),
            }
        }
        let long_running = !services.values().any(|s| {
            s["depends_on"].as_object().and_then(|d| d.get(name.as_str())).is_some_and(|c| c["condition"] == "service_completed_successfully")
        });
        if long_running {
            assert!(service["healthcheck"].is_object() || dockerfile_healthcheck(service), "{name} has no healthcheck");
            assert!(service["restart"].is_string(), "{name} has no restart policy");
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let source = spec.split(':').next().unwrap();
            if source.contains("/target/") {
                // Build output (the components): checked against spin.toml below.
                assert!(compose_dir.join(source.split("/target/").next().unwrap()).is_dir(), "{name}: {source}");
            } else if source.starts_with('.') || source.starts_with('/') {
                let path = compose_dir.join(source);
                assert!(path.exists(), "{name}: mounted path {source} does not exist ({})", path.display());
            } else {
                assert!(declared_volumes.contains(source), "{name}: volume {source} is not declared");
            }
        }
        if let Some(build) = service["build"].as_object() {
            let context = compose_dir.join(build["context"].as_str().expect("build context"));
            assert!(context.is_dir(), "{name}: build context {} does not exist", context.display());
            let dockerfile = context.join(build.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile"));
            assert!(dockerfile.is_file(), "{name}: {} does not exist", dockerfile.display());
        }
        for network in as_list(&service["networks"]) {
            assert!(declared_networks.contains(&network), "{name}: network {network} is not declared");
        }
    }

    // The instances serve spin.toml with the sidecar's address and token, and
    // every component it names is inside what they mount.
    let manifest = read(&root.join("spin.toml"));
    let sources: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("source = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(!sources.is_empty(), "component sources in spin.toml");
    for instance in &instances {
        let service = &services[*instance];
        let mounts: Vec<(String, String)> = as_list(&service["volumes"])
            .iter()
            .map(|v| {
                let mut parts = v.split(':');
                (parts.next().unwrap().to_owned(), parts.next().unwrap_or_default().to_owned())
            })
            .collect();
        let manifest_mount = mounts.iter().find(|(source, _)| source.ends_with("/spin.toml")).expect("spin.toml mounted");
        assert_eq!(compose_dir.join(&manifest_mount.0).canonicalize().unwrap(), root.join("spin.toml"), "{instance}");
        let app_dir = manifest_mount.1.trim_end_matches("spin.toml");
        for source in &sources {
            let inside = format!("{app_dir}{source}");
            assert!(mounts.iter().any(|(_, target)| inside.starts_with(&format!("{target}/"))), "{instance}: {inside} is not mounted");
        }
        let command = as_list(&service["command"]).join(" ");
        assert!(command.contains("up") && command.contains("--listen 0.0.0.0:3000") && command.contains("spin.toml"), "{instance}: {command}");
        let env = &service["environment"];
        assert_eq!(env["SPIN_VARIABLE_SIDECAR_URL"], "http://sidecar:7071", "{instance}");
        assert!(env["SPIN_VARIABLE_SIDECAR_TOKEN"].as_str().is_some_and(|t| t.contains("ORDERS_SIDECAR_TOKEN")), "{instance}");
    }

    // nginx's upstreams are the instances; Prometheus's targets are services.
    let upstreams = read(&compose_dir.join("nginx-upstreams.conf"));
    let upstream_hosts: BTreeSet<String> = upstreams
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("server "))
        .map(|rest| rest.split_whitespace().next().unwrap().trim_end_matches(';').to_owned())
        .collect();
    let expected: BTreeSet<String> = instances.iter().map(|i| format!("{i}:3000")).collect();
    assert_eq!(upstream_hosts, expected, "nginx-upstreams.conf against the instances");
    let prometheus = yaml_one(&compose_dir.join("prometheus.yml"));
    for job in prometheus["scrape_configs"].as_array().expect("scrape_configs") {
        for target in job["static_configs"].as_array().into_iter().flatten().flat_map(|s| s["targets"].as_array().cloned().unwrap_or_default()) {
            let host = target.as_str().unwrap().split(':').next().unwrap().to_owned();
            assert!(host == "127.0.0.1" || names.contains(host.as_str()), "Prometheus target {target} is not a service");
        }
    }

    // Every variable the file needs is in .env.example.
    let example = read(&compose_dir.join(".env.example"));
    let defined: HashSet<&str> = example.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(|l| l.split_once('=').map(|(k, _)| k.trim())).collect();
    for (name, required) in interpolations(&read(&compose_path)) {
        assert!(!required || defined.contains(name.as_str()), "${{{name}}} is required but not in .env.example");
    }

    // Grafana's provisioning and the dashboard it loads.
    let datasources = yaml_one(&root.join("infra/grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(datasources["datasources"][0]["type"], "prometheus");
    assert_eq!(datasources["datasources"][0]["url"], "http://prometheus:9090");
    let providers = yaml_one(&root.join("infra/grafana/provisioning/dashboards/orders.yml"));
    let dashboards_path = providers["providers"][0]["options"]["path"].as_str().expect("dashboard path").to_owned();
    let grafana_mounts = as_list(&services["grafana"]["volumes"]).join("\n");
    assert!(grafana_mounts.contains(&format!("orders-dashboard.json:{dashboards_path}/")), "the dashboard is mounted where the provider looks");

    // Compose itself resolves the file (with the example's values), and
    // refuses to without the secrets.
    let Some(compose_cli) = installed("docker-compose") else { return missing("docker-compose (docker compose v2)", &pip_install()) };
    let home = tempfile::tempdir().unwrap();
    let config = |env_file: &Path| {
        run(Command::new(&compose_cli)
            .arg("-f").arg(&compose_path)
            .arg("--env-file").arg(env_file)
            .args(["config", "--quiet"])
            .env("HOME", home.path())
            .env_remove("ORDERS_SIDECAR_TOKEN")
            .env_remove("MONGO_ROOT_PASSWORD")
            .env_remove("ORDERS_MONGO_PASSWORD")
            .env_remove("REDIS_PASSWORD")
            .env_remove("GRAFANA_ADMIN_PASSWORD"))
    };
    let resolved = config(&compose_dir.join(".env.example"));
    assert!(resolved.status.success(), "docker compose config:\n{}", text(&resolved.stderr));
    let empty = home.path().join("empty.env");
    std::fs::write(&empty, "").unwrap();
    let refused = config(&empty);
    assert!(!refused.status.success(), "compose should refuse to start without the secrets");
    assert!(text(&refused.stderr).contains("infra/compose/.env"), "the error says where to set them:\n{}", text(&refused.stderr));
}

#[test]
fn sidecar_dockerfile_builds_the_orders_binary_as_non_root() {
    let root = repo_root();
    let dockerfile = read(&root.join("host/sidecar/Dockerfile"));
    let instructions: Vec<(String, String)> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_ascii_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let stages: Vec<usize> = instructions.iter().enumerate().filter(|(_, (op, _))| op == "FROM").map(|(i, _)| i).collect();
    assert!(stages.len() >= 2, "a multi-stage build");

    // The builder uses the workspace's Rust version.
    let workspace = read(&root.join("Cargo.toml"));
    let rust_version = workspace
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version").map(|v| v.trim_start_matches([' ', '=']).trim().trim_matches('"').to_owned()))
        .expect("workspace rust-version");
    let builder = &instructions[stages[0]].1;
    assert!(builder.starts_with(&format!("rust:{rust_version}-bookworm")), "builder {builder:?} for rust-version {rust_version}");
    let build = instructions.iter().find(|(op, rest)| op == "RUN" && rest.contains("cargo build")).expect("cargo build").1.clone();
    assert!(build.contains("--release") && build.contains("-p orders"), "{build}");

    // Every workspace member is in the build context the Dockerfile copies.
    let copied: Vec<String> = instructions[..stages[1]]
        .iter()
        .filter(|(op, _)| op == "COPY")
        .flat_map(|(_, rest)| rest.split_whitespace().rev().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let members = workspace.split("members").nth(1).and_then(|m| m.split_once('[')).and_then(|(_, m)| m.split_once(']')).expect("workspace members").0;
    for member in members.split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty()) {
        assert!(copied.iter().any(|c| member.starts_with(c.trim_end_matches('/'))), "workspace member {member} is not copied into the build: {copied:?}");
    }

    // The runtime: slim, non-root, only the binary, the sidecar's port and health.
    let runtime = &instructions[*stages.last().unwrap()..];
    assert!(runtime[0].1.starts_with("debian:bookworm-slim"), "runtime {:?}", runtime[0].1);
    let copies: Vec<&String> = runtime.iter().filter(|(op, _)| op == "COPY").map(|(_, rest)| rest).collect();
    assert_eq!(copies.len(), 1, "only the binary is copied: {copies:?}");
    assert!(copies[0].starts_with("--from=") && copies[0].contains("orders /usr/local/bin/orders"), "{}", copies[0]);
    let user = runtime.iter().rev().find(|(op, _)| op == "USER").expect("USER").1.clone();
    assert!(!["root", "0", "0:0"].contains(&user.as_str()), "runs as {user}");
    assert!(runtime.iter().any(|(op, rest)| op == "EXPOSE" && rest.split_whitespace().any(|p| p == "7071")));
    let health = runtime.iter().find(|(op, _)| op == "HEALTHCHECK").expect("HEALTHCHECK").1.clone();
    assert!(health.contains("/healthz"), "{health}");
    let entrypoint = &runtime.iter().rev().find(|(op, _)| op == "ENTRYPOINT").expect("ENTRYPOINT").1;
    assert_eq!(serde_json::from_str::<Value>(entrypoint).expect("exec-form ENTRYPOINT"), json!(["orders", "sidecar"]));

    let ignored = read(&root.join(".dockerignore"));
    let ignored: HashSet<&str> = ignored.lines().map(|l| l.trim().trim_end_matches('/')).collect();
    for wanted in ["target", "functions/target", ".git", "node_modules", ".data"] {
        assert!(ignored.contains(wanted), ".dockerignore should exclude {wanted}");
    }

    let Some(hadolint) = installed("hadolint") else { return missing("hadolint", &pip_install()) };
    let lint = run(Command::new(hadolint).arg(root.join("host/sidecar/Dockerfile")));
    assert!(lint.status.success(), "hadolint:\n{}{}", text(&lint.stdout), text(&lint.stderr));
}

// --- metrics -----------------------------------------------------------------

/// The families of a Prometheus text exposition: name -> (type, label names seen).
fn metric_families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut families: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            families.entry(name.to_owned()).or_default().0 = kind.to_owned();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let family = families
            .keys()
            .find(|f| {
                sample == f.as_str() || ["_bucket", "_sum", "_count"].iter().any(|s| sample.strip_suffix(s) == Some(f.as_str()))
            })
            .cloned()
            .unwrap_or_else(|| sample.to_owned());
        let labels = families.entry(family).or_default();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.rfind('}').unwrap_or(line.len())];
            labels.1.extend(label_names(body));
        }
    }
    families
}

/// Label names of `a="x",b=~"y"` (values may hold escaped quotes and commas).
fn label_names(body: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')).collect();
        if name.is_empty() {
            break;
        }
        names.push(name);
        while chars.next_if(|c| *c != '"').is_some() {}
        chars.next();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
    names
}

/// What a PromQL expression uses: metric names (orders_*, process_*) with
/// the labels each is matched on, and the labels it groups by.
#[derive(Debug, Default)]
struct QueryUses {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

fn scan_promql(expr: &str) -> QueryUses {
    let chars: Vec<char> = expr.chars().collect();
    let mut uses = QueryUses::default();
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let read_braces = |i: &mut usize| -> String {
        let start = *i + 1;
        let mut in_string = false;
        *i += 1;
        while *i < chars.len() {
            match chars[*i] {
                '\\' if in_string => *i += 1,
                '"' => in_string = !in_string,
                '}' if !in_string => break,
                _ => {}
            }
            *i += 1;
        }
        let end = (*i).min(chars.len());
        let body: String = chars[start..end].iter().collect();
        *i += 1;
        body
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            read_braces(&mut i);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            skip_spaces(&mut next);
            let follower = chars.get(next).copied();
            if (word == "by" || word == "without") && follower == Some('(') {
                let end = chars[next..].iter().position(|c| *c == ')').map(|p| next + p).unwrap_or(chars.len());
                let list: String = chars[next + 1..end].iter().collect();
                uses.grouping.extend(list.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
                i = end + 1;
            } else if follower == Some('(') {
                // a function
            } else if word.starts_with("orders_") || word.starts_with("process_") {
                let mut labels = Vec::new();
                if follower == Some('{') {
                    i = next;
                    labels = label_names(&read_braces(&mut i));
                }
                uses.selectors.push((word, labels));
            }
        } else {
            i += 1;
        }
    }
    uses
}

/// Every expression of the dashboard's panels (rows' nested panels included).
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((panel["title"].as_str().unwrap_or_default().to_owned(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&repo_root().join("infra/grafana/orders-dashboard.json"))).expect("the dashboard is JSON")
}

#[test]
fn dashboard_is_a_grafana_dashboard_over_a_prometheus_variable() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| (36..=41).contains(&v)), "schemaVersion");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    let variables = dashboard["templating"]["list"].as_array().expect("templating");
    let datasource = variables.iter().find(|v| v["type"] == "datasource").expect("a data source variable");
    assert_eq!(datasource["query"], "prometheus");
    let reference = format!("${{{}}}", datasource["name"].as_str().unwrap());
    let variable_names: Vec<&str> = variables.iter().filter_map(|v| v["name"].as_str()).collect();

    let mut ids = HashSet::new();
    let mut cells: HashSet<(u64, u64)> = HashSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "duplicate panel id in {title}");
        let grid = &panel["gridPos"];
        let (x, y, w, h) = (grid["x"].as_u64().unwrap(), grid["y"].as_u64().unwrap(), grid["w"].as_u64().unwrap(), grid["h"].as_u64().unwrap());
        assert!(x + w <= 24, "{title} is wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel at ({cx}, {cy})");
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], reference.as_str(), "{title} uses the data source variable");
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("{title} has no query"));
        let mut refs = HashSet::new();
        for target in targets {
            assert!(refs.insert(target["refId"].as_str().expect("refId")), "{title}: duplicate refId");
            assert_eq!(target["datasource"]["uid"], reference.as_str(), "{title}: query data source");
            let expr = target["expr"].as_str().expect("expr");
            for variable in expr.split('$').skip(1) {
                let name: String = variable.trim_start_matches('{').chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(name.starts_with("__") || variable_names.contains(&name.as_str()), "{title}: unknown variable ${name}");
            }
        }
    }
}

#[test]
fn dashboard_queries_parse_as_promql() {
    if !python_has("promql_parser") {
        return missing("Python with promql-parser", &pip_install());
    }
    let exprs: Vec<String> = dashboard_exprs(&dashboard())
        .into_iter()
        .map(|(_, e)| e.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$job", "orders").replace("$instance", "host:1"))
        .collect();
    let script = "import json, sys, promql_parser\nbad = []\nfor e in json.load(sys.stdin):\n    try:\n        promql_parser.parse(e)\n    except Exception as error:\n        bad.append(f'{e}: {error}')\nprint('\\n'.join(bad))\nsys.exit(1 if bad else 0)";
    let mut child = Command::new(python()).args(["-c", script]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &exprs).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "queries that are not PromQL:\n{}{}", text(&output.stdout), text(&output.stderr));
    assert!(!exprs.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_queries_only_metrics_the_product_exports() {
    let product = Product::up(env!("CARGO_BIN_EXE_orders"), &Backends::default()).expect("orders up");
    // The admin key: every orders route needs one (issue 12).
    let client = orders_testkit::contract::client_with_key(product.admin_key.as_deref(), Some(Duration::from_secs(30)));
    let base = product.url.trim_end_matches('/');

    // Traffic through every function the dashboard looks at.
    assert_eq!(client.get(format!("{base}/orders")).send().await.unwrap().status(), 200);
    let created = client
        .post(format!("{base}/orders"))
        .header("content-type", "application/json")
        .body(r#"{"product":"x","quantity":1,"customer_name":"a","customer_address":"b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["order"]["_id"].as_str().expect("order id").to_owned();
    for _ in 0..2 {
        assert_eq!(client.get(format!("{base}/orders/{id}")).send().await.unwrap().status(), 200);
    }
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let families = metric_families(&metrics);

    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (title, expr) in dashboard_exprs(&dashboard()) {
        let uses = scan_promql(&expr);
        assert!(!uses.selectors.is_empty(), "{title}: no orders_/process_ metric in {expr}");
        let mut expr_labels = BTreeSet::new();
        let mut any_samples = false;
        for (name, labels) in &uses.selectors {
            let (family, histogram_series) = match families.get(name) {
                Some(_) => (name.clone(), false),
                None => match ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)) {
                    Some(base) => (base.to_owned(), true),
                    None => (name.clone(), false),
                },
            };
            used.insert(family.clone());
            let Some((kind, seen_labels)) = families.get(&family) else {
                problems.push(format!("{title}: {name} is not exported by /metrics"));
                continue;
            };
            if histogram_series && kind != "histogram" {
                problems.push(format!("{title}: {name}, but {family} is a {kind}, not a histogram"));
            }
            if name.ends_with("_bucket") && !expr.contains("histogram_quantile") {
                problems.push(format!("{title}: {name} outside histogram_quantile"));
            }
            if family.ends_with("_total") && kind != "counter" {
                problems.push(format!("{title}: {family} is a {kind}, not a counter"));
            }
            any_samples |= !seen_labels.is_empty();
            let mut known = seen_labels.clone();
            if histogram_series {
                known.insert("le".into());
            }
            for label in labels.iter().filter(|l| !["job", "instance", "__name__"].contains(&l.as_str())) {
                if !seen_labels.is_empty() && !known.contains(label) {
                    problems.push(format!("{title}: {name} has no label {label} (it has {known:?})"));
                }
            }
            expr_labels.extend(known);
        }
        for label in uses.grouping.iter().filter(|l| !["job", "instance"].contains(&l.as_str())) {
            if any_samples && !expr_labels.contains(label) {
                problems.push(format!("{title}: grouped by {label}, which none of its metrics has ({expr_labels:?})"));
            }
        }
    }
    assert!(problems.is_empty(), "the dashboard and /metrics disagree:\n{}\n\n/metrics:\n{metrics}", problems.join("\n"));

    // The dashboard covers what an operator of this product looks at.
    for wanted in [
        "orders_http_requests_total",
        "orders_http_request_duration_seconds",
        "orders_component_instantiation_seconds",
        "orders_outbound_request_duration_seconds",
        "orders_sidecar_operations_total",
        "orders_sidecar_operation_duration_seconds",
        "orders_store_operation_duration_seconds",
        "orders_store_errors_total",
        "orders_cache_requests_total",
        "orders_cache_degraded",
        "orders_store_pool_connections",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(wanted), "no panel shows {wanted}");
    }
    let exprs: Vec<String> = dashboard_exprs(&dashboard()).into_iter().map(|(_, e)| e).collect();
    assert!(exprs.iter().any(|e| e.contains("orders_outbound_request_duration_seconds_bucket") && e.contains("destination=\"sidecar\"")), "the sidecar hop");
    assert!(exprs.iter().any(|e| e.contains("result=~\"hit|stale\"") && e.contains("hit|stale|miss")), "the cache hit ratio");
    assert!(exprs.iter().filter(|e| e.contains("orders_http_request_duration_seconds_bucket")).flat_map(|e| ["0.5", "0.99"].into_iter().filter(move |q| e.contains(&format!("histogram_quantile({q},")))).collect::<HashSet<_>>().len() == 2, "p50 and p99 latency");
}

#[test]
fn prometheus_configs_name_the_jobs() {
    if !python_has("yaml") {
        return missing("Python with PyYAML", &pip_install());
    }
    for (file, jobs) in [
        ("infra/prometheus/prometheus.yml", vec!["orders-instances", "orders-sidecar"]),
        ("infra/compose/prometheus.yml", vec!["orders-sidecar"]),
    ] {
        let config = yaml_one(&repo_root().join(file));
        let scrape = config["scrape_configs"].as_array().unwrap_or_else(|| panic!("{file}: scrape_configs"));
        let mut names = HashSet::new();
        for job in scrape {
            let name = job["job_name"].as_str().unwrap_or_else(|| panic!("{file}: job_name"));
            assert!(names.insert(name), "{file}: job {name} twice");
            assert!(job["metrics_path"].is_null() || job["metrics_path"] == "/metrics", "{file}: {name} metrics_path");
            let targets: Vec<&Value> = job["static_configs"].as_array().into_iter().flatten().flat_map(|s| s["targets"].as_array().into_iter().flatten()).collect();
            assert!(!targets.is_empty(), "{file}: {name} has no static targets");
            for target in targets {
                let target = target.as_str().unwrap();
                assert!(target.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()), "{file}: target {target}");
            }
        }
        for job in jobs {
            assert!(names.contains(job), "{file} should scrape {job}: {names:?}");
        }
        for key in ["scrape_interval", "scrape_timeout"] {
            assert!(config["global"][key].is_string(), "{file}: global.{key}");
        }
    }
    // On a host, the instances are those of nginx's upstreams.conf.
    let upstreams = read(&repo_root().join("infra/nginx/upstreams.conf"));
    let config = yaml_one(&repo_root().join("infra/prometheus/prometheus.yml"));
    let instances = config["scrape_configs"].as_array().unwrap().iter().find(|j| j["job_name"] == "orders-instances").unwrap();
    for target in instances["static_configs"][0]["targets"].as_array().unwrap() {
        assert!(upstreams.contains(&format!("server {} ", target.as_str().unwrap())), "{target} is not in infra/nginx/upstreams.conf");
    }
}

// --- CI and docs ---------------------------------------------------------------

#[test]
fn github_workflow_runs_ci_run() {
    if !python_has("yaml") {
        return missing("Python with PyYAML", &pip_install());
    }
    let path = repo_root().join(".github/workflows/ci.yml");
    let workflow = yaml_one(&path);
    // YAML 1.1 reads the key `on` as true.
    let triggers = if workflow["on"].is_null() { &workflow["true"] } else { &workflow["on"] };
    assert!(triggers["push"].is_object() && triggers.get("pull_request").is_some(), "runs on pushes and pull requests: {triggers}");
    let jobs = workflow["jobs"].as_object().expect("jobs");
    let steps: Vec<&Value> = jobs.values().flat_map(|j| j["steps"].as_array().into_iter().flatten()).collect();
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    let uses: Vec<&str> = steps.iter().filter_map(|s| s["uses"].as_str()).collect();
    assert!(uses.iter().any(|u| u.starts_with("actions/checkout@")), "checks out: {uses:?}");
    assert!(runs.iter().any(|r| r.contains("rustup target add wasm32-wasip2")), "adds the Wasm target: {runs:?}");
    assert!(runs.iter().any(|r| r.trim() == "bash .ci/run"), "runs .ci/run: {runs:?}");
    let cached: String = steps.iter().filter(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/cache@"))).filter_map(|s| s["with"]["path"].as_str()).collect();
    assert!(cached.contains("cargo") && cached.contains(".cache/orders-target"), "caches Cargo and the target directory: {cached}");

    let Some(checker) = installed("check-jsonschema") else { return missing("check-jsonschema", &pip_install()) };
    let output = run(Command::new(checker).args(["--builtin-schema", "vendor.github-workflows"]).arg(&path));
    assert!(output.status.success(), "the workflow schema:\n{}{}", text(&output.stdout), text(&output.stderr));
}

#[test]
fn deploy_doc_names_files_that_exist() {
    let root = repo_root();
    let doc = read(&root.join("docs/deploy.md"));
    let mut named = BTreeSet::new();
    for start in doc.match_indices("infra/").map(|(i, _)| i).chain(doc.match_indices("host/sidecar/Dockerfile").map(|(i, _)| i)) {
        let path: String = doc[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c)).collect();
        named.insert(path.trim_end_matches(['.', '/']).to_owned());
    }
    assert!(named.len() >= 5, "docs/deploy.md should point at the infra files: {named:?}");
    for path in &named {
        // Files the operator makes (infra/compose/.env) come from an example.
        let exists = root.join(path).exists() || root.join(format!("{path}.example")).exists();
        assert!(exists, "docs/deploy.md names {path}, which does not exist");
    }
    for wanted in ["spin up", "spin build", "SPIN_VARIABLE_SIDECAR_TOKEN", "orders sidecar", "spin deploy", "spin aka deploy", "--variable sidecar_url=", "docker compose", "kubectl apply -k infra/k8s"] {
        assert!(doc.contains(wanted), "docs/deploy.md should explain `{wanted}`");
    }
}
