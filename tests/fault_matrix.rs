//! The fault matrix: each fault provoked under a steady load of reads and
//! keyed writes (`POST /orders` with `Idempotency-Key`, retried with the same
//! key until acknowledged, as a client should), then judged on what a client
//! can tell: no acknowledged write lost, none applied twice, every error a
//! 503 + Retry-After (a refused connection only where the front door itself
//! is the fault), no answer slower than the store timeout allows, and how
//! long from the fault's end to the first success and to full throughput.
//! A bundle is in progress in every case: started just before the fault, it
//! must end once (ready, or failed with a reason) and its link work once.
//!
//! The default run covers kill -9 of the sidecar and of an instance, SIGSTOP
//! of the sidecar, and a partition between instance and sidecar; the rest
//! runs with `ORDERS_FAULT_MATRIX=full`. Every case prints its row of the
//! recovery table (and appends it to `$ORDERS_FAULT_REPORT` when set).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orders_testkit::bundle_client::{BundleClient, zip_entries};
use orders_testkit::contract::{Api, sample_order};
use orders_testkit::fault_proxy::{Fault, FaultProxy};
use orders_testkit::file_server::{FileServer, content};
use orders_testkit::process::{OwnedProcess, signal, signal_group};
use orders_testkit::product::{Backends, Cluster, start_orders};
use orders_testkit::services::{MongoServer, RedisServer};
use reqwest::StatusCode;
use serde_json::Value;

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

/// The sidecar's bound on one store operation in these deployments.
const STORE_TIMEOUT: Duration = Duration::from_millis(3000);
/// The longest any answer may take while a part is down: the store timeout,
/// the runner's margin on it, and slack for a loaded two-core machine.
const SLOWEST_ANSWER: Duration = Duration::from_millis(3000 + 1000 + 3000);
const WARM_UP: Duration = Duration::from_secs(3);
/// How long a freeze or a partition lasts.
const FAULT_SPAN: Duration = Duration::from_secs(10);
/// How long after the fault's end the load may take to get back to full throughput.
const RECOVERY_BOUND: Duration = Duration::from_secs(25);
/// Pause between one worker's requests: a steady load, not a flood.
const PACE: Duration = Duration::from_millis(25);
const READERS: usize = 3;
const WRITERS: usize = 3;

fn full_matrix() -> bool {
    std::env::var("ORDERS_FAULT_MATRIX").is_ok_and(|value| value == "full")
}

/// Skips a slow case unless the full matrix was asked for.
macro_rules! full_matrix_only {
    () => {
        if !full_matrix() {
            eprintln!(
                "skipped: a slow case of the fault matrix; set ORDERS_FAULT_MATRIX=full to run it"
            );
            return;
        }
    };
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Success,
    /// 503 with Retry-After: the answer a client should get while a part is down.
    Unavailable,
    /// No connection, or one cut mid-request (only nginx's own faults may cause these).
    Refused,
    Wrong(String),
}

struct Sample {
    ended: Instant,
    took: Duration,
    outcome: Outcome,
}

#[derive(Default)]
struct Record {
    samples: Vec<Sample>,
    /// (tag, id) of every acknowledged write.
    acknowledged: Vec<(String, String)>,
}

async fn classify(sent: Result<reqwest::Response, reqwest::Error>) -> (Outcome, Option<Value>) {
    match sent {
        Ok(response) => {
            let status = response.status();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Option<Value> = response.json().await.ok();
            let outcome = match status {
                _ if status.is_success() => Outcome::Success,
                StatusCode::SERVICE_UNAVAILABLE if retry_after => Outcome::Unavailable,
                _ => Outcome::Wrong(format!("{status} {}", body.clone().unwrap_or_default())),
            };
            (outcome, body)
        }
        Err(error) if error.is_connect() || error.is_request() && !error.is_timeout() => {
            (Outcome::Refused, None)
        }
        Err(error) => (Outcome::Wrong(format!("transport: {error}")), None),
    }
}

/// Readers and keyed writers against `api` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(api: &Api, case: &str) -> Self {
        let mut seeded = Vec::new();
        for n in 0..10 {
            let created = api.create(&sample_order(&format!("{case}-seed-{n}"))).await;
            assert_eq!(
                created.status,
                StatusCode::CREATED,
                "seeding: {:?}",
                created.body
            );
            seeded.push(
                created.body["order"]["_id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
            );
        }
        let (stop, record) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Record::default())),
        );
        let mut workers = Vec::new();
        for reader in 0..READERS {
            let (api, stop, record, seeded) =
                (api.clone(), stop.clone(), record.clone(), seeded.clone());
            workers.push(tokio::spawn(async move {
                let mut n = reader;
                while !stop.load(Ordering::Relaxed) {
                    let path = if n % 5 == 0 {
                        "/orders?limit=10".to_owned()
                    } else {
                        format!("/orders/{}", seeded[n % seeded.len()])
                    };
                    let started = Instant::now();
                    let (outcome, _) =
                        classify(api.client.get(format!("{}{path}", api.base)).send().await).await;
                    record.lock().expect("lock").samples.push(Sample {
                        ended: Instant::now(),
                        took: started.elapsed(),
                        outcome,
                    });
                    n += READERS;
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        for writer in 0..WRITERS {
            let (api, stop, record, case) =
                (api.clone(), stop.clone(), record.clone(), case.to_owned());
            workers.push(tokio::spawn(async move {
                for n in 0.. {
                    let tag = format!("{case}-w{writer}-{n}");
                    // The same key until acknowledged: a retry is a replay, never a second order.
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let request = api
                            .client
                            .post(format!("{}/orders", api.base))
                            .header("idempotency-key", &tag)
                            .json(&sample_order(&tag));
                        let (outcome, body) = classify(request.send().await).await;
                        let acknowledged = outcome == Outcome::Success;
                        {
                            let mut record = record.lock().expect("lock");
                            record.samples.push(Sample {
                                ended: Instant::now(),
                                took: started.elapsed(),
                                outcome,
                            });
                            if acknowledged {
                                let id = body
                                    .as_ref()
                                    .and_then(|b| b["order"]["_id"].as_str())
                                    .unwrap_or_default()
                                    .to_owned();
                                record.acknowledged.push((tag.clone(), id));
                            }
                        }
                        if acknowledged {
                            break;
                        }
                        tokio::time::sleep(PACE * 4).await;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        Self {
            stop,
            record,
            workers,
        }
    }

    fn successes_between(&self, from: Instant, to: Instant) -> usize {
        let record = self.record.lock().expect("lock");
        record
            .samples
            .iter()
            .filter(|s| s.outcome == Outcome::Success && s.ended >= from && s.ended < to)
            .count()
    }

    /// Waits until a second after `fault_end` holds 80 % of the baseline's
    /// successes (full throughput, on a machine whose cores are shared), or
    /// the bound passes; returns the times to the first success and to it.
    async fn wait_for_recovery(
        &self,
        baseline_per_sec: f64,
        fault_end: Instant,
    ) -> (Option<Duration>, Option<Duration>) {
        let window = Duration::from_secs(1);
        let wanted = (baseline_per_sec * 0.8).max(1.0) as usize;
        while fault_end.elapsed() < RECOVERY_BOUND {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let mut start = fault_end;
            while start + window <= Instant::now() {
                if self.successes_between(start, start + window) >= wanted {
                    return (
                        self.first_success_after(fault_end),
                        Some(start.duration_since(fault_end)),
                    );
                }
                start += Duration::from_millis(100);
            }
        }
        (self.first_success_after(fault_end), None)
    }

    fn first_success_after(&self, fault_end: Instant) -> Option<Duration> {
        let record = self.record.lock().expect("lock");
        record
            .samples
            .iter()
            .filter(|s| s.outcome == Outcome::Success && s.ended >= fault_end)
            .map(|s| s.ended.duration_since(fault_end))
            .min()
    }

    async fn finish(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        Arc::try_unwrap(self.record)
            .ok()
            .expect("no worker left")
            .into_inner()
            .expect("lock")
    }
}

/// What a deployment may answer during its fault besides successes and 503s.
#[derive(Clone, Copy, PartialEq)]
enum FrontDoor {
    /// The fault is behind the front door: every error is a 503 + Retry-After.
    Stays,
    /// The fault is the front door (nginx): connections may be refused or cut.
    IsTheFault,
}

/// How long answers may take during the fault.
#[derive(Clone, Copy, PartialEq)]
enum Patience {
    /// No answer past the store timeout (and the runner's margin).
    StoreTimeout,
    /// A frozen process holds what it had accepted until it is thawed.
    FreezeSpan,
}

struct Row {
    fault: String,
    acknowledged: usize,
    lost: usize,
    duplicated: usize,
    unavailable: usize,
    refused: usize,
    slowest: Duration,
    first_success: Option<Duration>,
    full_throughput: Option<Duration>,
    /// How the bundle in progress across the fault ended.
    bundle: String,
}

fn seconds(value: Option<Duration>) -> String {
    value.map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

impl Row {
    fn print(&self) {
        let line = format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} s | {} | {} | {} |",
            self.fault,
            self.acknowledged,
            self.lost,
            self.duplicated,
            self.unavailable,
            self.refused,
            self.slowest.as_secs_f64(),
            seconds(self.first_success),
            seconds(self.full_throughput),
            self.bundle
        );
        println!(
            "fault matrix row\n| fault | acknowledged | lost | duplicated | 503s | refused | slowest answer | to first success | to full throughput | bundle |\n|---|---|---|---|---|---|---|---|---|---|\n{line}"
        );
        if let Some(path) = std::env::var_os("ORDERS_FAULT_REPORT")
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Every order whose product names this case, counted by tag.
async fn orders_by_tag(api: &Api, case: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/orders?limit=1000&after={id}"),
            None => "/orders?limit=1000".to_owned(),
        };
        let page = read_until_served(api, &path).await;
        for order in page["orders"].as_array().into_iter().flatten() {
            if let Some(tag) = order["product"]
                .as_str()
                .and_then(|p| p.strip_prefix("Banner "))
                .filter(|t| t.starts_with(case))
            {
                *counts.entry(tag.to_owned()).or_insert(0) += 1;
            }
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return counts,
        }
    }
}

/// A read after the matrix's fault, retried through any last 503.
async fn read_until_served(api: &Api, path: &str) -> Value {
    for _ in 0..40 {
        let answer = api.get(path).await;
        if answer.status == StatusCode::OK {
            return answer.body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{path} was not served after the fault");
}

/// The bundle side of every case: a file server whose slow files the
/// deployment may fetch, and one bundle of them in progress across the fault.
struct BundleWork {
    files: FileServer,
}

/// A bundle's parts and their size: each part takes 4 s to download, so the
/// fault starts while every part is still on the wire.
const BUNDLE_PARTS: usize = 3;
const PART_BYTES: usize = 200_000;

impl BundleWork {
    async fn start() -> Self {
        Self {
            files: FileServer::start().await,
        }
    }

    /// The sidecar settings the bundle needs: the file server allowed, and a
    /// claim left by a killed or cut-off worker taken again after 3 s.
    fn env(&self) -> Vec<(String, String)> {
        [
            (
                "ORDERS_FETCH_ALLOW",
                format!("127.0.0.1:{}", self.files.address.port()),
            ),
            ("ORDERS_FETCH_TIMEOUT_MS", "10000".to_owned()),
            ("ORDERS_BUNDLE_CLAIM_TIMEOUT_MS", "3000".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    async fn submit(&self, api: &Api) -> BundleInFlight {
        let client = BundleClient::new(&api.base, api.key.as_deref());
        let urls: Vec<String> = (0..BUNDLE_PARTS)
            .map(|n| {
                self.files.url(&format!(
                    "/slow/part-{n}.bin?bytes={PART_BYTES}&ms=4000"
                ))
            })
            .collect();
        let id = client.create(&urls).await.expect("a bundle before the fault");
        BundleInFlight { client, id }
    }
}

struct BundleInFlight {
    client: BundleClient,
    id: String,
}

impl BundleInFlight {
    /// Waits for the bundle's end and checks it ended once: ready with every
    /// part once and a link that works exactly once, or failed with a reason.
    /// Returns its line for the table.
    async fn ends_once(&self, case: &str) -> String {
        let client = &self.client;
        let mut state = Value::Null;
        for _ in 0..120 {
            if let Ok(now) = client.state(&self.id).await {
                state = now;
                if matches!(state["status"].as_str(), Some("ready" | "failed")) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let outcome = match state["status"].as_str() {
            Some("failed") => {
                let reason = state["error"].as_str().unwrap_or_default();
                assert!(!reason.is_empty(), "{case}: bundle failed without a reason: {state}");
                format!("failed: {reason}")
            }
            Some("ready") => {
                let link = state["link"].as_str().expect("link").to_owned();
                let download = client.get(&link).await.expect("download");
                assert_eq!(download.status(), 200, "{case}: the bundle's link after the fault");
                let entries = zip_entries(&download.bytes().await.expect("zip")).expect("a zip");
                assert_eq!(entries.len(), BUNDLE_PARTS, "{case}: every part once in the zip");
                for (name, bytes) in &entries {
                    assert_eq!(bytes, &content(name, PART_BYTES), "{case}: {name}");
                }
                let again = client.get(&link).await.expect("second download").status();
                assert!(
                    matches!(again.as_u16(), 403 | 410),
                    "{case}: the bundle's link worked twice ({again})"
                );
                "ready, link once".to_owned()
            }
            _ => panic!("{case}: the bundle did not end within 60 s: {state}"),
        };
        // Ended once: the log holds one ready or failed, and nothing ends it again.
        let events = client
            .follow(&self.id, None, Duration::from_secs(10), |_| false)
            .await
            .expect("the bundle's events");
        // The resume point is the last event that had an id: `clock` events
        // carry none (as with a browser's EventSource, they do not move it).
        let last = events.iter().rev().find_map(|e| e.id.clone());
        if let Ok(later) = client
            .follow(&self.id, last.as_deref(), Duration::from_secs(3), |_| false)
            .await
        {
            assert!(
                !later
                    .iter()
                    .any(|e| matches!(e.event.as_str(), "ready" | "failed")),
                "{case}: the bundle ended twice: {:?}",
                later.iter().map(|e| &e.event).collect::<Vec<_>>()
            );
        }
        outcome
    }
}

/// Runs the load, provokes the fault (`provoke` returns when the fault has
/// ended), measures the recovery, checks every acknowledged write, and
/// returns the row of the table.
async fn measure(
    case: &str,
    api: &Api,
    bundles: &BundleWork,
    front_door: FrontDoor,
    patience: Patience,
    provoke: impl AsyncFnOnce(),
) -> Row {
    let load = Load::start(api, case).await;
    let load_began = Instant::now();
    tokio::time::sleep(WARM_UP).await;
    let baseline = load.successes_between(load_began + Duration::from_secs(1), Instant::now())
        as f64
        / (WARM_UP.as_secs_f64() - 1.0);
    let bundle = bundles.submit(api).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fault_began = Instant::now();
    provoke().await;
    let fault_end = Instant::now();
    let (first_success, full_throughput) = load.wait_for_recovery(baseline, fault_end).await;
    let record = load.finish().await;

    let wrong: Vec<_> = record
        .samples
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::Wrong(what) => Some(what.clone()),
            Outcome::Refused if front_door == FrontDoor::Stays => {
                Some("refused or cut connection".to_owned())
            }
            _ => None,
        })
        .collect();
    let slowest = record
        .samples
        .iter()
        .filter(|s| s.ended >= fault_began)
        .map(|s| s.took)
        .max()
        .unwrap_or_default();
    let mut lost = Vec::new();
    for (tag, id) in &record.acknowledged {
        let answer = api.get(&format!("/orders/{id}")).await;
        let answer = if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            api.get(&format!("/orders/{id}")).await
        } else {
            answer
        };
        if answer.status != StatusCode::OK
            || answer.body["order"]["product"] != format!("Banner {tag}")
        {
            lost.push((tag.clone(), answer.status));
        }
    }
    let counts = orders_by_tag(api, case).await;
    let duplicated: Vec<_> = counts
        .iter()
        .filter(|(tag, count)| **count > 1 && !tag.contains("-seed-"))
        .collect();
    let bundle = bundle.ends_once(case).await;
    let row = Row {
        fault: case.to_owned(),
        acknowledged: record.acknowledged.len(),
        lost: lost.len(),
        duplicated: duplicated.iter().map(|(_, count)| **count - 1).sum(),
        unavailable: record
            .samples
            .iter()
            .filter(|s| s.outcome == Outcome::Unavailable)
            .count(),
        refused: record
            .samples
            .iter()
            .filter(|s| s.outcome == Outcome::Refused)
            .count(),
        slowest,
        first_success,
        full_throughput,
        bundle,
    };
    row.print();
    assert!(
        row.acknowledged > 10,
        "{case}: only {} writes acknowledged",
        row.acknowledged
    );
    assert!(
        lost.is_empty(),
        "{case}: acknowledged writes lost: {lost:?}"
    );
    assert!(
        duplicated.is_empty(),
        "{case}: keyed writes applied twice: {duplicated:?}"
    );
    assert!(
        wrong.is_empty(),
        "{case}: {} answers were not 503 + Retry-After: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    // Recovery is asserted; how fast throughput returns is measured, not judged.
    assert!(
        first_success.is_some(),
        "{case}: no success within {RECOVERY_BOUND:?} of the fault's end"
    );
    if patience == Patience::StoreTimeout {
        assert!(
            slowest <= SLOWEST_ANSWER,
            "{case}: an answer took {slowest:?}, past the store timeout's {SLOWEST_ANSWER:?}"
        );
    }
    row
}

/// A store whose operations give up after `STORE_TIMEOUT`, and the bundle's settings.
fn quick_store(bundles: &BundleWork) -> Backends {
    let mut extra_env = vec![(
        "ORDERS_STORE_TIMEOUT_MS".into(),
        STORE_TIMEOUT.as_millis().to_string(),
    )];
    extra_env.extend(bundles.env());
    Backends {
        extra_env,
        ..Backends::default()
    }
}

fn pid_of(cluster: &Cluster, role: &str) -> u32 {
    cluster
        .processes()
        .expect("cluster.json")
        .into_iter()
        .find(|(r, _, _)| r == role)
        .map(|(_, pid, _)| pid)
        .expect("a process of that role")
}

/// `cluster.json` names a new pid for the role after its restart.
async fn wait_for_restart(cluster: &Cluster, role: &str, old_pid: u32) -> u32 {
    for _ in 0..100 {
        let pid = pid_of(cluster, role);
        if pid != old_pid && pid > 0 {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the {role} (pid {old_pid}) was not restarted within 10 s");
}

/// Sends `sig` to what a fault of `role` hits. For nginx that is its master
/// and its workers, one process group as `orders cluster` starts it: a worker
/// outlives a killed master and goes on serving, and a frozen master alone
/// freezes nothing a client sees.
fn hit(role: &str, pid: u32, sig: i32) {
    if role == "nginx" {
        signal_group(pid, sig);
    } else {
        signal(pid, sig);
    }
}

async fn kill_9_in_a_cluster(role: &str, front_door: FrontDoor) {
    let bundles = BundleWork::start().await;
    let cluster = Cluster::start(ORDERS, 2, &quick_store(&bundles)).expect("orders cluster");
    let victim = pid_of(&cluster, role);
    let case = format!("kill-9-{role}");
    measure(
        &case,
        &cluster.api(),
        &bundles,
        front_door,
        Patience::StoreTimeout,
        async || {
            hit(role, victim, libc::SIGKILL);
            // The fault ends when the process is gone; recovery is the supervisor's.
        },
    )
    .await;
    let restarted = wait_for_restart(&cluster, role, victim).await;
    assert_ne!(restarted, victim);
    let metric =
        std::fs::read_to_string(cluster.data_dir.join("cluster.prom")).expect("cluster.prom");
    assert!(
        metric.lines().any(
            |line| line.starts_with("orders_cluster_restarts_total{role=\"")
                && line.contains(role)
                && line.ends_with(" 1")
        ),
        "{metric}"
    );
}

/// What is frozen: `role`'s process `pid`.
struct Frozen<'a> {
    role: &'a str,
    pid: u32,
}

/// SIGSTOP of the frozen process for the fault's span, then SIGCONT.
async fn freeze(
    case: &str,
    api: &Api,
    bundles: &BundleWork,
    frozen: Frozen<'_>,
    front_door: FrontDoor,
    patience: Patience,
) {
    measure(case, api, bundles, front_door, patience, async || {
        hit(frozen.role, frozen.pid, libc::SIGSTOP);
        tokio::time::sleep(FAULT_SPAN).await;
        hit(frozen.role, frozen.pid, libc::SIGCONT);
    })
    .await;
}

async fn sigstop_in_a_cluster(role: &str, patience: Patience) {
    let bundles = BundleWork::start().await;
    let cluster = Cluster::start(ORDERS, 2, &quick_store(&bundles)).expect("orders cluster");
    let victim = pid_of(&cluster, role);
    let front_door = if role == "nginx" {
        FrontDoor::IsTheFault
    } else {
        FrontDoor::Stays
    };
    freeze(
        &format!("sigstop-10s-{role}"),
        &cluster.api(),
        &bundles,
        Frozen { role, pid: victim },
        front_door,
        patience,
    )
    .await;
    assert_eq!(
        pid_of(&cluster, role),
        victim,
        "a frozen process is not restarted: it has not exited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_sidecar_is_restarted_and_loses_nothing() {
    kill_9_in_a_cluster("sidecar", FrontDoor::Stays).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_an_instance_is_routed_around_and_restarted() {
    kill_9_in_a_cluster("instance", FrontDoor::Stays).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigstop_of_the_sidecar_answers_503_within_the_store_timeout() {
    sigstop_in_a_cluster("sidecar", Patience::StoreTimeout).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_nginx_is_restarted() {
    full_matrix_only!();
    kill_9_in_a_cluster("nginx", FrontDoor::IsTheFault).await;
}

/// nginx gives up on a frozen instance after the instances' own deadline
/// (store timeout + margins) and answers 503 + Retry-After, instead of
/// holding the request for the whole freeze.
#[tokio::test(flavor = "multi_thread")]
async fn sigstop_of_an_instance_answers_503_within_the_store_timeout() {
    full_matrix_only!();
    sigstop_in_a_cluster("instance", Patience::StoreTimeout).await;
}

/// The front door itself frozen: what it accepted waits for the thaw.
#[tokio::test(flavor = "multi_thread")]
async fn sigstop_of_nginx() {
    full_matrix_only!();
    sigstop_in_a_cluster("nginx", Patience::FreezeSpan).await;
}

/// `orders sidecar` and `orders serve` with a fault proxy between them:
/// the "spin up + sidecar" shape, one instance calling one sidecar.
struct SidecarBehindAProxy {
    api: Api,
    proxy: FaultProxy,
    _sidecar: OwnedProcess,
    _instance: OwnedProcess,
    _dir: tempfile::TempDir,
}

impl SidecarBehindAProxy {
    async fn start(bundles: &BundleWork) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().display().to_string();
        let created = std::process::Command::new(ORDERS)
            .args([
                "keys",
                "create",
                "--name",
                "matrix",
                "--scopes",
                "admin",
                "--data-dir",
                &data_dir,
            ])
            .env("ORDERS_LOG", "warn")
            .output()
            .expect("orders keys create");
        assert!(created.status.success(), "{created:?}");
        let key = String::from_utf8_lossy(&created.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let token = "matrix-sidecar-token-0123456789".to_owned();
        let env = [
            ("ORDERS_SIDECAR_TOKEN", token),
            (
                "ORDERS_STORE_TIMEOUT_MS",
                STORE_TIMEOUT.as_millis().to_string(),
            ),
        ];
        let bundle_env = bundles.env();
        let sidecar_env: Vec<(&str, String)> = env
            .iter()
            .cloned()
            .chain(bundle_env.iter().map(|(name, value)| (name.as_str(), value.clone())))
            .collect();
        let (sidecar, sidecar_url) = start_orders(
            ORDERS,
            &[
                "sidecar",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &data_dir,
            ],
            &sidecar_env,
            &dir.path().join("sidecar.log"),
        )
        .expect("orders sidecar");
        let sidecar_address: SocketAddr = sidecar_url
            .trim_start_matches("http://")
            .parse()
            .expect("sidecar address");
        let proxy = FaultProxy::start(sidecar_address)
            .await
            .expect("fault proxy");
        let via_proxy = format!("http://{}", proxy.address);
        let timeout = (STORE_TIMEOUT + Duration::from_secs(1))
            .as_millis()
            .to_string();
        let serve = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--sidecar-url",
            &via_proxy,
            "--sidecar-timeout-ms",
            &timeout,
            "--data-dir",
            &data_dir,
            "--no-build",
        ];
        let (instance, url) = start_orders(ORDERS, &serve, &env, &dir.path().join("instance.log"))
            .expect("orders serve");
        Self {
            api: Api::with_key(&url, &key),
            proxy,
            _sidecar: sidecar,
            _instance: instance,
            _dir: dir,
        }
    }
}

async fn between_instance_and_sidecar(case: &str, fault: Fault) {
    let bundles = BundleWork::start().await;
    let deployment = SidecarBehindAProxy::start(&bundles).await;
    measure(
        case,
        &deployment.api,
        &bundles,
        FrontDoor::Stays,
        Patience::StoreTimeout,
        async || {
            deployment.proxy.set(fault);
            tokio::time::sleep(FAULT_SPAN).await;
            deployment.proxy.set(Fault::Pass);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_between_instance_and_sidecar_answers_503_and_heals() {
    between_instance_and_sidecar("partition-10s-instance-sidecar", Fault::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_between_instance_and_sidecar() {
    full_matrix_only!();
    between_instance_and_sidecar(
        "latency-100ms-instance-sidecar",
        Fault::Latency(Duration::from_millis(100)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resets_between_instance_and_sidecar() {
    full_matrix_only!();
    between_instance_and_sidecar(
        "resets-2pct-instance-sidecar",
        Fault::ResetRandomly { per_mille: 20 },
    )
    .await;
}

/// A cluster on MongoDB and Redis, each reached through a fault proxy.
struct ClusterOnProxiedStores {
    cluster: Cluster,
    mongo_proxy: FaultProxy,
    redis_proxy: FaultProxy,
    mongo: MongoServer,
    redis: RedisServer,
}

impl ClusterOnProxiedStores {
    async fn start(database: &str, bundles: &BundleWork) -> Self {
        let mongo = MongoServer::start().expect("MongoDB-wire server");
        let redis = RedisServer::start().expect("redis");
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mongo_proxy = FaultProxy::start(loopback(mongo.port))
            .await
            .expect("mongo proxy");
        let redis_proxy = FaultProxy::start(loopback(redis.port))
            .await
            .expect("redis proxy");
        let backends = Backends {
            mongo_uri: Some(format!(
                "mongodb://{}/?directConnection=true",
                mongo_proxy.address
            )),
            mongo_database: Some(database.to_owned()),
            redis_url: Some(format!("redis://{}", redis_proxy.address)),
            extra_env: quick_store(bundles).extra_env,
        };
        let cluster =
            Cluster::start(ORDERS, 2, &backends).expect("orders cluster on MongoDB and Redis");
        Self {
            cluster,
            mongo_proxy,
            redis_proxy,
            mongo,
            redis,
        }
    }
}

async fn between_sidecar_and_store(case: &str, store: &str, fault: Fault) {
    let bundles = BundleWork::start().await;
    let deployment = ClusterOnProxiedStores::start(&case.replace('-', "_"), &bundles).await;
    let proxy = if store == "redis" {
        &deployment.redis_proxy
    } else {
        &deployment.mongo_proxy
    };
    measure(
        case,
        &deployment.cluster.api(),
        &bundles,
        FrontDoor::Stays,
        Patience::StoreTimeout,
        async || {
            proxy.set(fault);
            tokio::time::sleep(FAULT_SPAN).await;
            proxy.set(Fault::Pass);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_between_sidecar_and_mongodb() {
    full_matrix_only!();
    between_sidecar_and_store("partition-10s-sidecar-mongodb", "mongo", Fault::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_between_sidecar_and_redis() {
    full_matrix_only!();
    between_sidecar_and_store("partition-10s-sidecar-redis", "redis", Fault::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_between_sidecar_and_mongodb() {
    full_matrix_only!();
    between_sidecar_and_store(
        "latency-100ms-sidecar-mongodb",
        "mongo",
        Fault::Latency(Duration::from_millis(100)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_between_sidecar_and_redis() {
    full_matrix_only!();
    between_sidecar_and_store(
        "latency-100ms-sidecar-redis",
        "redis",
        Fault::Latency(Duration::from_millis(100)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resets_between_sidecar_and_mongodb() {
    full_matrix_only!();
    between_sidecar_and_store(
        "resets-2pct-sidecar-mongodb",
        "mongo",
        Fault::ResetRandomly { per_mille: 20 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resets_between_sidecar_and_redis() {
    full_matrix_only!();
    between_sidecar_and_store(
        "resets-2pct-sidecar-redis",
        "redis",
        Fault::ResetRandomly { per_mille: 20 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_mongodb_restarted_by_its_own_supervisor() {
    full_matrix_only!();
    let bundles = BundleWork::start().await;
    let mut deployment = ClusterOnProxiedStores::start("kill_mongo", &bundles).await;
    let api = deployment.cluster.api();
    let mongo = &mut deployment.mongo;
    measure(
        "kill-9-mongodb",
        &api,
        &bundles,
        FrontDoor::Stays,
        Patience::StoreTimeout,
        async || {
            signal(mongo.pid(), libc::SIGKILL);
            // What systemd or Kubernetes would do: start it again on its port and data.
            tokio::time::sleep(Duration::from_secs(2)).await;
            mongo
                .start_again()
                .expect("restart the MongoDB-wire server");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_redis_restarted_by_its_own_supervisor() {
    full_matrix_only!();
    let bundles = BundleWork::start().await;
    let mut deployment = ClusterOnProxiedStores::start("kill_redis", &bundles).await;
    let api = deployment.cluster.api();
    let redis = &mut deployment.redis;
    measure(
        "kill-9-redis",
        &api,
        &bundles,
        FrontDoor::Stays,
        Patience::StoreTimeout,
        async || {
            signal(redis.pid().expect("redis runs"), libc::SIGKILL);
            tokio::time::sleep(Duration::from_secs(2)).await;
            redis.pause();
            redis.resume().expect("restart redis");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigstop_of_mongodb() {
    full_matrix_only!();
    let bundles = BundleWork::start().await;
    let deployment = ClusterOnProxiedStores::start("stop_mongo", &bundles).await;
    freeze(
        "sigstop-10s-mongodb",
        &deployment.cluster.api(),
        &bundles,
        Frozen {
            role: "mongodb",
            pid: deployment.mongo.pid(),
        },
        FrontDoor::Stays,
        Patience::StoreTimeout,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigstop_of_redis() {
    full_matrix_only!();
    let bundles = BundleWork::start().await;
    let deployment = ClusterOnProxiedStores::start("stop_redis", &bundles).await;
    freeze(
        "sigstop-10s-redis",
        &deployment.cluster.api(),
        &bundles,
        Frozen {
            role: "redis",
            pid: deployment.redis.pid().expect("redis runs"),
        },
        FrontDoor::Stays,
        Patience::StoreTimeout,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sidecars_fail_over_when_one_is_killed() {
    full_matrix_only!();
    let bundles = BundleWork::start().await;
    let redis = RedisServer::start().expect("redis");
    let mut backends = quick_store(&bundles);
    backends.redis_url = Some(redis.url.clone());
    backends
        .extra_env
        .push(("ORDERS_SIDECARS".into(), "2".into()));
    let cluster = Cluster::start(ORDERS, 2, &backends).expect("orders cluster --sidecars 2");
    let sidecars: Vec<u32> = cluster
        .processes()
        .expect("cluster.json")
        .into_iter()
        .filter(|(r, _, _)| r == "sidecar")
        .map(|(_, pid, _)| pid)
        .collect();
    assert_eq!(sidecars.len(), 2);
    measure(
        "kill-9-one-of-two-sidecars",
        &cluster.api(),
        &bundles,
        FrontDoor::Stays,
        Patience::StoreTimeout,
        async || {
            signal(sidecars[0], libc::SIGKILL);
        },
    )
    .await;
}
