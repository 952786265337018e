//! Starting and stopping one process of `orders cluster`: an `orders`
//! subcommand (sidecar or instance), started again on the address it had,
//! or nginx on its generated config.
//!
//! Each runs in a process group of its own: a Ctrl-C in the terminal reaches
//! only the cluster, which stops them in order, and when nginx's master dies
//! its orphaned worker (still holding the port) can be ended with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a stopped process may finish its in-flight work before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(12);

/// How to start one process of the cluster.
pub enum Launch {
    /// `orders <subcommand> --config <settings> --listen <address>`: the
    /// settings handed down whole (`settings::child`), the address kept.
    Orders {
        role: &'static str,
        subcommand: &'static str,
        settings: PathBuf,
        log: PathBuf,
    },
    Nginx {
        binary: PathBuf,
        dir: PathBuf,
        config: PathBuf,
        listen: SocketAddr,
    },
}

pub struct Started {
    pub child: Child,
    pub address: String,
}

impl Launch {
    /// Starts the process listening on `address` (port 0 picks one) and
    /// waits until it serves; a restart appends to the log of the first start.
    pub async fn start(&self, address: &str, restart: bool) -> Result<Started> {
        match self {
            Self::Orders {
                role,
                subcommand,
                settings,
                log,
            } => {
                let exe = std::env::current_exe().context("cannot find the orders executable")?;
                let mut command = crate::settings::child::command(&exe, subcommand, settings);
                command.args(["--listen", address]);
                spawn_orders(role, command, &open_log(log, restart)?, log).await
            }
            Self::Nginx {
                binary,
                dir,
                config,
                listen,
            } => {
                let mut child = Command::new(binary)
                    .args([
                        "-p",
                        &dir.display().to_string(),
                        "-c",
                        &config.display().to_string(),
                        "-g",
                        "daemon off;",
                    ])
                    .stdout(Stdio::null())
                    .stderr(open_log(&dir.join("stderr.log"), restart)?)
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| {
                        format!(
                            "cannot start nginx ({}); install it or pass --nginx",
                            binary.display()
                        )
                    })?;
                wait_for_nginx(*listen, dir, &mut child).await?;
                Ok(Started {
                    child,
                    address: listen.to_string(),
                })
            }
        }
    }

    /// After an exit: ends what the process left in its group (nginx's
    /// worker keeps serving, and holding the port, when its master is killed).
    pub fn clean_up_after_exit(&self, pid: u32) {
        if pid > 0 {
            // SAFETY: signalling the process group of a process this one
            // started as the leader of a group of its own (its pid is the group's id).
            unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
        }
    }
}

fn open_log(path: &Path, append: bool) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// SIGTERM, then SIGKILL after the grace period.
pub async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling a child this process started, by its PID.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Starts an `orders` command and waits for its "listening on http://ADDR" line.
async fn spawn_orders(
    role: &str,
    mut command: Command,
    log_file: &std::fs::File,
    log: &Path,
) -> Result<Started> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(log_file.try_clone()?)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the {role}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .with_context(|| {
            format!(
                "the {role} did not start within 120 s; see {}",
                log.display()
            )
        })??
        .with_context(|| format!("the {role} exited during start; see {}", log.display()))?;
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("unexpected start line from the {role}: {line}"))?
        .to_owned();
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Started { child, address })
}

async fn wait_for_nginx(listen: SocketAddr, nginx_dir: &Path, nginx: &mut Child) -> Result<()> {
    for _ in 0..100 {
        if let Some(status) = nginx.try_wait()? {
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
