//! `orders cluster`: one sidecar, N runner instances and nginx in front of
//! them, all on loopback, for tests and benchmarks. Every process started is
//! listed in `<data-dir>/cluster.json` and stopped, by PID, on exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::auth_options::AuthOptions;
use crate::config::{DataDir, RunnerOptions, StoreOptions, manifest_dir};
use crate::keys::{announce_admin_key, bootstrap_admin_key, open_keys};
use crate::run::{ServeArgs, SidecarArgs, random_token, shutdown_signal};
use crate::settings::child;
use crate::settings::secret::Secret;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// How many runner instances behind nginx.
    #[arg(long, env = "ORDERS_INSTANCES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub instances: u32,
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

#[derive(Debug, Serialize)]
struct ProcessEntry {
    role: &'static str,
    pid: u32,
    address: String,
}

/// A child process that is killed (SIGTERM, then SIGKILL) when dropped.
struct Managed {
    role: &'static str,
    child: Child,
    address: String,
}

impl Managed {
    fn entry(&self) -> ProcessEntry {
        ProcessEntry { role: self.role, pid: self.child.id().unwrap_or(0), address: self.address.clone() }
    }
}

async fn stop_all(children: &mut [Managed]) {
    for managed in children.iter() {
        if let Some(pid) = managed.child.id() {
            // SAFETY: signalling a child this process started, by its PID.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for managed in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(12), managed.child.wait()).await.is_err() {
            let _ = managed.child.kill().await;
        }
    }
}

/// Starts `orders <subcommand>` with `settings` and waits for its
/// "listening on http://ADDR" line.
async fn spawn_orders(role: &'static str, settings: &Path, log: &Path) -> Result<Managed> {
    let exe = std::env::current_exe().context("cannot find the orders executable")?;
    let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let subcommand = if role == "sidecar" { "sidecar" } else { "serve" };
    let mut child = child::command(&exe, subcommand, settings)
        .stdout(Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the {role}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .with_context(|| format!("the {role} did not start within 120 s; see {}", log.display()))??
        .with_context(|| format!("the {role} exited during start; see {}", log.display()))?;
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("unexpected start line from the {role}: {line}"))?
        .to_owned();
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Managed { role, child, address })
}

impl ClusterArgs {
    pub fn check(&self) -> Result<()> {
        self.store.check()
    }
}

pub async fn run(args: ClusterArgs, log: &str) -> Result<()> {
    let data_dir = std::path::absolute(args.store.data_dir())?;
    crate::private_files::private_data_dir(&data_dir)?;
    if !args.runner.no_build {
        crate::components::build_if_stale(&args.runner.manifest)?;
    }
    let manifest = std::path::absolute(&args.runner.manifest)?;
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
    let mut children: Vec<Managed> = Vec::new();
    let result = start(&args, &data_dir, &manifest, &token, log, &mut children).await;
    if let Err(error) = result {
        stop_all(&mut children).await;
        return Err(error);
    }
    if let Some(key) = admin_key {
        announce_admin_key(&key, &data_dir);
    }
    shutdown_signal().await;
    stop_all(&mut children).await;
    let _ = std::fs::remove_file(data_dir.join("cluster.json"));
    Ok(())
}

async fn start(args: &ClusterArgs, data_dir: &Path, manifest: &Path, token: &Secret, log: &str, children: &mut Vec<Managed>) -> Result<()> {
    let settings_dir = data_dir.join("cluster");
    let mut store = args.store.clone();
    store.location.dir.data_dir = data_dir.to_path_buf();
    let download_secret = store.bundles.components.secret(data_dir)?;
    store.bundles.components.download_secret = Some(download_secret.clone());

    let sidecar = SidecarArgs {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        sidecar_token: token.clone(),
        auth: args.auth.clone(),
        store: store.clone(),
    };
    let settings = child::write_settings(&settings_dir, "sidecar", &sidecar, log)?;
    let sidecar = spawn_orders("sidecar", &settings, &data_dir.join("sidecar.log")).await?;
    let sidecar_url = format!("http://{}", sidecar.address).parse().context("the sidecar's address")?;
    children.push(sidecar);

    let mut runner = args.runner.clone();
    runner.manifest = manifest.to_path_buf();
    runner.no_build = true;
    let instance = ServeArgs {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        sidecar_url,
        sidecar_token: token.clone(),
        dir: DataDir { data_dir: data_dir.to_path_buf() },
        components: store.bundles.components.clone(),
        runner,
    };
    let settings = child::write_settings(&settings_dir, "instance", &instance, log)?;
    for index in 0..args.instances {
        let log = data_dir.join(format!("instance-{index}.log"));
        children.push(spawn_orders("instance", &settings, &log).await?);
    }

    let nginx_dir = data_dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let upstreams: String = children
        .iter()
        .filter(|c| c.role == "instance")
        .map(|c| format!("        server {} max_fails=3 fail_timeout=5s;\n", c.address))
        .collect();
    let template_path = manifest_dir(manifest).join("infra/nginx/cluster.conf.template");
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("cannot read the nginx template {}", template_path.display()))?;
    let config = template
        .replace("{{prefix}}", &nginx_dir.display().to_string())
        .replace("{{listen}}", &args.listen.to_string())
        .replace("{{upstreams}}", upstreams.trim_end())
        .replace("{{download_secret}}", download_secret.expose())
        .replace("{{blobs}}", &data_dir.join("store/blobs").display().to_string())
        .replace("{{user}}", &worker_user());
    let config_path = nginx_dir.join("nginx.conf");
    // It holds the download secret.
    crate::private_files::write_private(&config_path, config.as_bytes())?;
    let nginx = Command::new(&args.nginx)
        .args(["-p", &nginx_dir.display().to_string(), "-c", &config_path.display().to_string(), "-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(nginx_dir.join("stderr.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start nginx ({}); install it or pass --nginx", args.nginx.display()))?;
    children.push(Managed { role: "nginx", child: nginx, address: args.listen.to_string() });
    wait_for_nginx(args.listen, &nginx_dir, children.last_mut().expect("nginx was just pushed")).await?;

    let entries: Vec<ProcessEntry> = children.iter().map(Managed::entry).collect();
    std::fs::write(data_dir.join("cluster.json"), serde_json::to_vec_pretty(&entries)?)?;
    println!("orders cluster is serving on http://{} ({} instances; processes in {})", args.listen, args.instances, data_dir.join("cluster.json").display());
    Ok(())
}

/// nginx started by root runs its workers as `nobody`, who cannot read the
/// data directory; they run as root then, like the rest of the cluster.
fn worker_user() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 { "user root;".to_owned() } else { String::new() }
}

async fn wait_for_nginx(listen: SocketAddr, nginx_dir: &Path, nginx: &mut Managed) -> Result<()> {
    for _ in 0..100 {
        if let Some(status) = nginx.child.try_wait()? {
            let log = std::fs::read_to_string(nginx_dir.join("stderr.log")).unwrap_or_default();
            bail!("nginx exited ({status}) during start: {log}");
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nginx did not accept connections on {listen} within 5 s")
}
