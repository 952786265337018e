//! The product, started as its users start it: `orders up` (embedded
//! defaults, or MongoDB + Redis) and `orders cluster`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{OwnedProcess, url_in};
use crate::repo_root;

/// A running `orders up`.
pub struct Product {
    pub url: String,
    pub process: OwnedProcess,
    pub data_dir: PathBuf,
    /// The admin key the product wrote to `<data-dir>/admin-key` (absent with `--auth off`).
    pub admin_key: Option<String>,
    _temp: Option<tempfile::TempDir>,
}

/// The key `orders up` / `orders cluster` keep in `<data-dir>/admin-key`.
pub fn read_admin_key(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("admin-key")).ok().map(|text| text.trim().to_owned()).filter(|k| !k.is_empty())
}

/// A client of `url` with the admin key, or without one when there is none.
fn api_for(url: &str, key: Option<&str>) -> crate::contract::Api {
    match key {
        Some(key) => crate::contract::Api::with_key(url, key),
        None => crate::contract::Api::new(url),
    }
}

/// What the product runs on.
#[derive(Default, Clone)]
pub struct Backends {
    pub mongo_uri: Option<String>,
    pub mongo_database: Option<String>,
    pub redis_url: Option<String>,
    /// Further `ORDERS_*` settings, e.g. a small pool.
    pub extra_env: Vec<(String, String)>,
}

fn orders_command(orders_bin: &Path, args: &[&str], backends: &Backends, data_dir: &Path) -> Command {
    let mut command = Command::new(orders_bin);
    command.current_dir(repo_root()).args(args).arg("--data-dir").arg(data_dir);
    // Tests must not pick up a developer's own settings.
    for (name, _) in std::env::vars() {
        if name.starts_with("ORDERS_") {
            command.env_remove(name);
        }
    }
    command.env("ORDERS_LOG", "warn");
    suite_routing(&mut command);
    if let Some(uri) = &backends.mongo_uri {
        command.env("ORDERS_MONGO_URI", uri);
    }
    if let Some(database) = &backends.mongo_database {
        command.env("ORDERS_MONGO_DATABASE", database);
    }
    if let Some(url) = &backends.redis_url {
        command.env("ORDERS_REDIS_URL", url);
    }
    command.envs(backends.extra_env.iter().map(|(k, v)| (k, v)));
    command
}

impl Product {
    /// `orders up` on a fresh data directory and a free port.
    pub fn up(orders_bin: &str, backends: &Backends) -> Result<Self> {
        let temp = tempfile::tempdir()?;
        let data_dir = temp.path().to_path_buf();
        let mut product = Self::up_in(orders_bin, backends, &data_dir, "127.0.0.1:0")?;
        product._temp = Some(temp);
        Ok(product)
    }

    /// `orders up` on a given data directory and address (for restarts).
    pub fn up_in(orders_bin: &str, backends: &Backends, data_dir: &Path, listen: &str) -> Result<Self> {
        let mut command = orders_command(Path::new(orders_bin), &["up", "--listen", listen], backends, data_dir);
        command.stderr(std::fs::File::create(data_dir.join("orders-up.log"))?);
        let (process, line) = OwnedProcess::start("orders up", command, "serving on", Duration::from_secs(600))
            .with_context(|| format!("see {}", data_dir.join("orders-up.log").display()))?;
        let url = url_in(&line).context("URL in the start line")?;
        let admin_key = read_admin_key(data_dir);
        Ok(Self { url, process, data_dir: data_dir.to_path_buf(), admin_key, _temp: None })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("orders-up.log")).unwrap_or_default()
    }

    /// A client of the API with the admin key.
    pub fn api(&self) -> crate::contract::Api {
        api_for(&self.url, self.admin_key.as_deref())
    }
}

/// A running `orders cluster`.
pub struct Cluster {
    pub url: String,
    pub process: OwnedProcess,
    pub data_dir: PathBuf,
    /// The admin key of `<data-dir>/admin-key`, when this start made one.
    pub admin_key: Option<String>,
    _temp: tempfile::TempDir,
}

impl Cluster {
    pub fn start(orders_bin: &str, instances: u32, backends: &Backends) -> Result<Self> {
        let temp = tempfile::tempdir()?;
        let data_dir = temp.path().to_path_buf();
        let listen = format!("127.0.0.1:{}", crate::process::free_port());
        let args = ["cluster", "--instances", &instances.to_string(), "--listen", &listen];
        let mut command = orders_command(Path::new(orders_bin), &args, backends, &data_dir);
        command.stderr(std::fs::File::create(data_dir.join("cluster.log"))?);
        let (process, line) = OwnedProcess::start("orders cluster", command, "serving on", Duration::from_secs(600))
            .with_context(|| format!("see {}", data_dir.join("cluster.log").display()))?;
        let url = url_in(&line).context("URL in the start line")?;
        let admin_key = read_admin_key(&data_dir);
        Ok(Self { url, process, data_dir, admin_key, _temp: temp })
    }

    /// A client of the cluster with the admin key.
    pub fn api(&self) -> crate::contract::Api {
        api_for(&self.url, self.admin_key.as_deref())
    }

    /// The processes the cluster lists in cluster.json, as (role, pid, address).
    pub fn processes(&self) -> Result<Vec<(String, u32, String)>> {
        let text = std::fs::read_to_string(self.data_dir.join("cluster.json"))?;
        let entries: Vec<serde_json::Value> = serde_json::from_str(&text)?;
        Ok(entries
            .iter()
            .map(|e| {
                (
                    e["role"].as_str().unwrap_or_default().to_owned(),
                    e["pid"].as_u64().unwrap_or_default() as u32,
                    e["address"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }
}

/// Builds the Wasm components (a no-op when they are fresh), so suites that
/// serve other manifests than spin.toml find every `.wasm`, the probe included.
pub fn ensure_components_built() -> Result<()> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return Ok(());
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(repo_root().join("functions"))
        .env_remove("CARGO_TARGET_DIR")
        .status()?;
    anyhow::ensure!(status.success(), "building the components failed");
    *built = true;
    Ok(())
}

/// Runs a whole suite on one routing path: `ORDERS_TEST_ROUTING=router`
/// sends every `/orders` request through the orders router component, the
/// path Spin takes. A test's own `ORDERS_ROUTING` still wins: it is set
/// after this.
fn suite_routing(command: &mut Command) {
    if let Ok(routing) = std::env::var("ORDERS_TEST_ROUTING") {
        command.env("ORDERS_ROUTING", routing);
    }
}

/// Any `orders` subcommand that prints a URL once it serves.
pub fn start_orders(orders_bin: &str, args: &[&str], env: &[(&str, String)], log: &Path) -> Result<(OwnedProcess, String)> {
    let mut command = Command::new(orders_bin);
    command.current_dir(repo_root()).args(args).env("ORDERS_LOG", "info").stderr(std::fs::File::create(log)?);
    suite_routing(&mut command);
    for (name, value) in env {
        command.env(name, value);
    }
    let (process, line) = OwnedProcess::start("orders", command, "http://", Duration::from_secs(600))
        .with_context(|| format!("see {}", log.display()))?;
    let url = url_in(&line).context("URL in the start line")?;
    Ok((process, url))
}
