//! Scale-out: N runner instances behind nginx, started by `orders cluster`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use orders_testkit::contract::{self, sample_order};
use orders_testkit::process::signal;
use orders_testkit::product::{Backends, Cluster};

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

#[tokio::test(flavor = "multi_thread")]
async fn cluster_of_three_lists_its_processes_and_passes_the_contract() {
    let cluster = Cluster::start(ORDERS, 3, &Backends::default()).expect("orders cluster");
    let processes = cluster.processes().expect("cluster.json");
    let count = |role: &str| processes.iter().filter(|(r, _, _)| r == role).count();
    assert_eq!((count("nginx"), count("instance"), count("sidecar")), (1, 3, 1), "{processes:?}");
    assert!(processes.iter().all(|(_, pid, address)| *pid > 0 && address.starts_with("127.0.0.1:")), "{processes:?}");
    let checks = contract::run(&cluster.api()).await;
    assert!(checks >= 150);
    // What nginx answers itself is JSON too (the contract checks its 413).
    let hidden = cluster.api().send(reqwest::Method::GET, "/protected-downloads/bundle.zip", &[], None).await;
    assert_eq!(hidden.status, reqwest::StatusCode::NOT_FOUND);
    assert!(hidden.body["message"].is_string(), "{:?}", hidden.body);
}

/// The instances with the runner's method routing off (every `/orders`
/// request through the orders router component, as under Spin).
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_routing_through_the_router_passes_the_contract() {
    let backends = Backends { extra_env: vec![("ORDERS_ROUTING".into(), "router".into())], ..Backends::default() };
    let cluster = Cluster::start(ORDERS, 2, &backends).expect("orders cluster, routing by router");
    let checks = contract::run(&cluster.api()).await;
    assert!(checks >= 150, "only {checks} checks ran");
    // The instances did chain through the router: its instantiations count.
    let mut routed = 0;
    for (_, _, address) in cluster.processes().expect("cluster.json").into_iter().filter(|(role, _, _)| role == "instance") {
        let metrics = reqwest::get(format!("http://{address}/metrics")).await.expect("an instance's /metrics").text().await.expect("text");
        let prefix = "orders_component_instantiation_seconds_count{function=\"orders-router\"} ";
        routed += metrics.lines().find_map(|line| line.strip_prefix(prefix)).map_or(0, |count| count.trim().parse::<u64>().expect("a count"));
    }
    assert!(routed >= 100, "the contract's /orders requests should each have made a router instance; {routed} did");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_an_instance_mid_run_fails_no_get() {
    let cluster = Cluster::start(ORDERS, 3, &Backends::default()).expect("orders cluster");
    let api = cluster.api();
    let mut ids = Vec::new();
    for n in 0..20 {
        let created = api.create(&sample_order(&format!("kill-{n}"))).await;
        ids.push(created.body["order"]["_id"].as_str().expect("id").to_owned());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (api, ids, stop) = (api.clone(), ids.clone(), stop.clone());
            let (served, failed, failures) = (served.clone(), failed.clone(), failures.clone());
            tokio::spawn(async move {
                let mut n = worker;
                while !stop.load(Ordering::Relaxed) {
                    let path = if n % 4 == 0 { "/orders?limit=10".to_owned() } else { format!("/orders/{}", ids[n % ids.len()]) };
                    let answer = api.get(&path).await;
                    if answer.status.is_success() {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.lock().expect("lock").push(format!("{path}: {} {:?}", answer.status, answer.body));
                    }
                    n += 8;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, victim, _) = cluster.processes().expect("cluster.json").into_iter().find(|(role, _, _)| role == "instance").expect("an instance");
    signal(victim, libc::SIGKILL);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }
    let served = served.load(Ordering::Relaxed);
    assert!(served > 100, "only {served} GETs were served");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed GETs: {:?}", failures.lock().expect("lock"));
    // The contract still holds on the two instances left.
    contract::run(&cluster.api()).await;
}

/// The pid cluster.json lists for `role` once it differs from `old` (0 if never within 15 s).
async fn next_pid(cluster: &Cluster, role: &str, old: u32) -> u32 {
    for _ in 0..150 {
        let listed = cluster.processes().ok().and_then(|p| p.into_iter().find(|(r, _, _)| r == role)).map(|(_, pid, _)| pid);
        if let Some(pid) = listed.filter(|pid| *pid != old && *pid > 0) {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_keeps_dying_stops_the_cluster_with_a_clear_message() {
    let backends = Backends { extra_env: vec![("ORDERS_MAX_RESTARTS_PER_MINUTE".into(), "1".into())], ..Backends::default() };
    let mut cluster = Cluster::start(ORDERS, 1, &backends).expect("orders cluster");
    let first = next_pid(&cluster, "sidecar", 0).await;
    signal(first, libc::SIGKILL);
    let second = next_pid(&cluster, "sidecar", first).await;
    assert!(second > 0, "the sidecar was not restarted once");
    assert_eq!(cluster.api().create(&sample_order("after-restart")).await.status, 201, "the restarted sidecar serves");
    let others: Vec<u32> = cluster.processes().expect("cluster.json").into_iter().filter(|(r, _, _)| r != "sidecar").map(|(_, pid, _)| pid).collect();
    signal(second, libc::SIGKILL);
    let mut exited = None;
    for _ in 0..300 {
        exited = cluster.process.child.try_wait().expect("wait");
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("the cluster did not stop after the cap of restarts");
    assert!(!status.success());
    let log = std::fs::read_to_string(cluster.data_dir.join("cluster.log")).unwrap_or_default();
    assert!(log.contains("sidecar-0") && log.contains("times within a minute"), "{log}");
    // SAFETY: probing (signal 0) pids this test's cluster started.
    let alive: Vec<u32> = others.into_iter().filter(|pid| unsafe { libc::kill(*pid as i32, 0) } == 0).collect();
    assert!(alive.is_empty(), "processes left running after the cluster stopped: {alive:?}");
}
