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
use crate::config::{RunnerOptions, StoreOptions, manifest_dir};
use crate::keys::{announce_admin_key, bootstrap_admin_key};
use crate::run::{random_token, shutdown_signal};

/// No `Debug`: the store options may hold passwords.
#[derive(Args)]
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

/// Starts `orders <args>` and waits for its "listening on http://ADDR" line.
async fn spawn_orders(role: &'static str, args: Vec<String>, env: Vec<(String, String)>, log: &Path) -> Result<Managed> {
    let exe = std::env::current_exe().context("cannot find the orders executable")?;
    let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = Command::new(exe)
        .args(&args)
        .envs(env)
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

pub async fn run(args: ClusterArgs) -> Result<()> {
    let data_dir = std::path::absolute(&args.store.data_dir)?;
    crate::private_files::private_data_dir(&data_dir)?;
    if !args.runner.no_build {
        crate::components::build_if_stale(&args.runner.manifest)?;
    }
    let manifest = std::path::absolute(&args.runner.manifest)?;
    let token = random_token();
    args.auth.settings(args.listen, "--listen")?;
    let admin_key = match args.auth.enabled() {
        true => bootstrap_admin_key(&*args.store.key_store(&data_dir).open().await?, &data_dir).await?,
        false => None,
    };
    let mut children: Vec<Managed> = Vec::new();
    let result = start(&args, &data_dir, &manifest, &token, &mut children).await;
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

async fn start(args: &ClusterArgs, data_dir: &Path, manifest: &Path, token: &str, children: &mut Vec<Managed>) -> Result<()> {
    let store_args = args.store.to_args(data_dir);
    let mut secret_env: Vec<(String, String)> = args.store.secret_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    secret_env.push(("ORDERS_SIDECAR_TOKEN".into(), token.to_owned()));
    let download_secret = args.store.bundles.secret(data_dir)?;
    secret_env.push(("ORDERS_DOWNLOAD_SECRET".into(), download_secret.clone()));

    let mut sidecar_args = vec!["sidecar".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
    sidecar_args.extend(store_args);
    sidecar_args.extend(args.auth.to_args());
    let sidecar = spawn_orders("sidecar", sidecar_args, secret_env.clone(), &data_dir.join("sidecar.log")).await?;
    let sidecar_url = format!("http://{}", sidecar.address);
    children.push(sidecar);

    for index in 0..args.instances {
        let mut instance_args = vec![
            "serve".to_owned(),
            "--listen".into(), "127.0.0.1:0".into(),
            "--sidecar-url".into(), sidecar_url.clone(),
            "--data-dir".into(), data_dir.display().to_string(),
            "--manifest".into(), manifest.display().to_string(),
            "--bundle-max-urls".into(), args.store.bundles.bundle_max_urls.to_string(),
            "--no-build".into(),
        ];
        instance_args.extend(args.runner.to_args());
        let log = data_dir.join(format!("instance-{index}.log"));
        children.push(spawn_orders("instance", instance_args, secret_env.clone(), &log).await?);
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
        .replace("{{download_secret}}", &download_secret)
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
