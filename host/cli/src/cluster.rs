//! `orders cluster`: one sidecar (or several sharing the store and Redis),
//! N runner instances and nginx in front of them, all on loopback, for tests
//! and benchmarks. Every process is supervised (restarted on the same
//! address when it exits unexpectedly, see `supervisor`), listed in
//! `<data-dir>/cluster.json`, and stopped, by PID, on exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::auth_options::AuthOptions;
use crate::cluster_process::{Launch, terminate};
use crate::config::{DataDir, RunnerOptions, StoreOptions, manifest_dir};
use crate::keys::{announce_admin_key, bootstrap_admin_key, open_keys};
use crate::process_table::{ProcessEntry, ProcessTable};
use crate::run::{SIDECAR_MARGIN, ServeArgs, SidecarArgs, random_token, shutdown_signal};
use crate::settings::child;
use crate::settings::secret::Secret;
use crate::supervisor::{RestartPolicy, Supervised, supervise};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// How many runner instances behind nginx.
    #[arg(long, env = "ORDERS_INSTANCES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub instances: u32,
    /// How many sidecars, sharing the store and Redis (more than one needs --redis-url);
    /// each instance calls one and fails over to the others.
    #[arg(long, env = "ORDERS_SIDECARS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub sidecars: u32,
    /// Restarts of one process within a minute after which the cluster gives up and stops.
    #[arg(long, env = "ORDERS_MAX_RESTARTS_PER_MINUTE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_restarts_per_minute: u32,
    /// Address nginx listens on.
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The nginx binary.
    #[arg(long, env = "ORDERS_NGINX", default_value = "nginx")]
    pub nginx: PathBuf,
    #[command(flatten)]
    pub auth: AuthOptions,
    #[command(flatten)]
    pub store: StoreOptions,
    #[command(flatten)]
    pub runner: RunnerOptions,
}

/// Where sidecars and instances first listen: a free port, which their
/// restarts keep (nginx listens on --listen).
const FIRST_LISTEN: &str = "127.0.0.1:0";

/// What an instance may add to its sidecar deadline before nginx gives up on
/// it: instantiation and the component's own work, on a loaded machine.
const INSTANCE_OWN_WORK: Duration = Duration::from_secs(1);

/// Every process of the cluster, supervised, with its row in the table.
type Processes = Vec<Supervised>;

impl ClusterArgs {
    pub fn check(&self) -> Result<()> {
        if self.sidecars > 1 && self.store.redis_url.is_none() {
            bail!(
                "--sidecars {} needs --redis-url / ORDERS_REDIS_URL: the sidecars must share one cache, or a read \
                 through one would miss a write through another (the store is shared either way)",
                self.sidecars
            );
        }
        self.store.check()
    }
}

pub async fn run(args: ClusterArgs, log: &str) -> Result<()> {
    // nginx listens with SO_REUSEPORT (one socket per worker), which would
    // share the port with another nginx of the same user instead of failing:
    // make sure the port is free before starting anything.
    drop(crate::config::bind(args.listen, "--listen").await?);
    // nginx, the sidecars and the instances inherit it: nginx holds two
    // descriptors per busy user (docs/capacity.md, "Room for 10,000 users").
    crate::fd_limit::raise_to_hard();
    let data_dir = std::path::absolute(args.store.data_dir())?;
    crate::private_files::private_data_dir(&data_dir)?;
    if !args.runner.no_build {
        crate::components::build_if_stale(&args.runner.manifest)?;
    }
    let manifest = std::path::absolute(&args.runner.manifest)?;
    // Once for every instance, which then only loads the code.
    crate::compile::ahead_in_child(&manifest, &data_dir)?;
    let token = random_token();
    args.auth.settings(args.listen, "--listen")?;
    let admin_key = match args.auth.enabled() {
        true => {
            let mut location = args.store.location.clone();
            location.dir.data_dir = data_dir.clone();
            bootstrap_admin_key(&*open_keys(&location).await?, &data_dir).await?
        }
        false => None,
    };
    let table = Arc::new(ProcessTable::new(&data_dir));
    let mut processes: Processes = Vec::new();
    if let Err(error) = start(&args, &data_dir, &manifest, &token, log, &table, &mut processes).await {
        for process in &mut processes {
            terminate(&mut process.child).await;
        }
        return Err(error);
    }
    table.write()?;
    println!(
        "orders cluster is serving on http://{} ({} instances, {} sidecars; processes in {})",
        args.listen,
        args.instances,
        args.sidecars,
        data_dir.join("cluster.json").display()
    );
    if let Some(key) = admin_key {
        announce_admin_key(&key, &data_dir);
    }
    let outcome = supervise_until_stopped(processes, RestartPolicy::with_cap(args.max_restarts_per_minute), table.clone()).await;
    table.remove_files();
    outcome
}

/// Supervises every process until Ctrl-C / SIGTERM or until one of them
/// spends its restarts; then stops them all.
async fn supervise_until_stopped(processes: Processes, policy: RestartPolicy, table: Arc<ProcessTable>) -> Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut supervisors = tokio::task::JoinSet::new();
    for process in processes {
        let (table, stopped) = (table.clone(), stopped.clone());
        supervisors.spawn(async move { supervise(process, policy, &table, stopped).await });
    }
    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        Some(ended) = supervisors.join_next() => ended.unwrap_or_else(|panic| Err(anyhow::anyhow!("a supervisor failed: {panic}"))),
    };
    if let Err(error) = &outcome {
        tracing::error!(error = format!("{error:#}"), "stopping the cluster");
    }
    let _ = stop.send(true);
    while supervisors.join_next().await.is_some() {}
    outcome
}

/// Starts `launch` for the first time and adds it to the table.
async fn first_start(role: &'static str, name: String, launch: Launch, table: &ProcessTable, processes: &mut Processes) -> Result<String> {
    let started = launch.start(FIRST_LISTEN, false).await?;
    let pid = started.child.id().unwrap_or(0);
    let slot = table.add(ProcessEntry { role, name: name.clone(), pid, address: started.address.clone(), restarts: 0 });
    let address = started.address.clone();
    processes.push(Supervised { slot, name, launch, address: started.address, child: started.child });
    Ok(address)
}

/// Starts the sidecars and instances, each with its settings handed down
/// whole in `<data-dir>/cluster/<name>.toml`, then nginx.
async fn start(
    args: &ClusterArgs,
    data_dir: &Path,
    manifest: &Path,
    token: &Secret,
    log: &str,
    table: &ProcessTable,
    processes: &mut Processes,
) -> Result<()> {
    let settings_dir = data_dir.join("cluster");
    let mut store = args.store.clone();
    store.location.dir.data_dir = data_dir.to_path_buf();
    let download_secret = store.bundles.components.secret(data_dir)?;
    store.bundles.components.download_secret = Some(download_secret.clone());

    let sidecar = SidecarArgs {
        listen: FIRST_LISTEN.parse().expect("a socket address"),
        sidecar_token: token.clone(),
        auth: args.auth.clone(),
        store: store.clone(),
    };
    let sidecar_settings = child::write_settings(&settings_dir, "sidecar", &sidecar, log)?;
    let mut sidecar_urls = Vec::new();
    for index in 0..args.sidecars {
        let log = data_dir.join(if index == 0 { "sidecar.log".to_owned() } else { format!("sidecar-{index}.log") });
        let launch = Launch::Orders { role: "sidecar", subcommand: "sidecar", settings: sidecar_settings.clone(), log };
        let address = first_start("sidecar", format!("sidecar-{index}"), launch, table, processes).await?;
        sidecar_urls.push(crate::settings::values::http_url(&format!("http://{address}")).map_err(anyhow::Error::msg)?);
    }

    let mut runner = args.runner.clone();
    runner.manifest = manifest.to_path_buf();
    runner.no_build = true;
    // A sidecar's calls may take its store timeout; the runner waits a little longer.
    let sidecar_timeout = Duration::from_millis(args.store.store_timeout_ms) + SIDECAR_MARGIN;
    let mut instance_addresses = Vec::new();
    for index in 0..args.instances {
        // Instances spread over the sidecars, each failing over to the next ones.
        let home = index as usize % sidecar_urls.len();
        let instance = ServeArgs {
            listen: FIRST_LISTEN.parse().expect("a socket address"),
            sidecar_url: sidecar_urls[home].clone(),
            sidecar_failover_urls: (1..sidecar_urls.len()).map(|step| sidecar_urls[(home + step) % sidecar_urls.len()].clone()).collect(),
            sidecar_timeout_ms: sidecar_timeout.as_millis() as u64,
            sidecar_token: token.clone(),
            dir: DataDir { data_dir: data_dir.to_path_buf() },
            components: store.bundles.components.clone(),
            runner: runner.clone(),
        };
        let name = format!("instance-{index}");
        let settings = child::write_settings(&settings_dir, &name, &instance, log)?;
        let log = data_dir.join(format!("{name}.log"));
        let launch = Launch::Orders { role: "instance", subcommand: "serve", settings, log };
        instance_addresses.push(first_start("instance", name, launch, table, processes).await?);
    }

    let nginx_dir = data_dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    // nginx counts an instance's 503 as a failure, and when the sidecar is
    // down every instance answers 503: a short fail_timeout lets them back
    // in within a second of the sidecar's restart (a dead instance costs
    // only a refused connection per second, passed to the next).
    let upstreams: String =
        instance_addresses.iter().map(|address| format!("        server {address} max_fails=3 fail_timeout=1s;\n")).collect();
    let template_path = manifest_dir(manifest).join("infra/nginx/cluster.conf.template");
    let template =
        std::fs::read_to_string(&template_path).with_context(|| format!("cannot read the nginx template {}", template_path.display()))?;
    let config = template
        .replace("{{prefix}}", &nginx_dir.display().to_string())
        .replace("{{listen}}", &args.listen.to_string())
        .replace("{{upstreams}}", upstreams.trim_end())
        .replace("{{download_secret}}", download_secret.expose())
        .replace("{{blobs}}", &data_dir.join("store/blobs").display().to_string())
        .replace("{{user}}", &worker_user())
        .replace("{{read_timeout}}", &format!("{}ms", (sidecar_timeout + INSTANCE_OWN_WORK).as_millis()));
    let config_path = nginx_dir.join("nginx.conf");
    // It holds the download secret.
    crate::private_files::write_private(&config_path, config.as_bytes())?;
    let launch = Launch::Nginx { binary: args.nginx.clone(), dir: nginx_dir, config: config_path, listen: args.listen };
    first_start("nginx", "nginx".to_owned(), launch, table, processes).await?;
    Ok(())
}

/// nginx started by root runs its workers as `nobody`, who cannot read the
/// data directory; they run as root then, like the rest of the cluster.
fn worker_user() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 { "user root;".to_owned() } else { String::new() }
}
