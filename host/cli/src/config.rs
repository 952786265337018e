//! Configuration: flags, then `ORDERS_*` environment variables, then a TOML
//! file (`--config` / `ORDERS_CONFIG`), then defaults. The file is applied
//! by setting the environment variables it names that are not already set,
//! so every source goes through clap's one set of validators.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use orders_runner::Limits;
use orders_sidecar::SidecarConfig;
use orders_sidecar::auth::AuthSettings;

use crate::bundle_options::BundleOptions;
use orders_sidecar::store::mongo::MongoSettings;

/// Loads `--config FILE` (or `ORDERS_CONFIG`) into the environment.
pub fn apply_config_file(args: &[String]) -> Result<()> {
    let from_flag = args.iter().position(|a| a == "--config").and_then(|i| args.get(i + 1)).cloned();
    let from_flag = from_flag.or_else(|| args.iter().find_map(|a| a.strip_prefix("--config=").map(str::to_owned)));
    let Some(path) = from_flag.or_else(|| std::env::var("ORDERS_CONFIG").ok()) else { return Ok(()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {path}"))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("config file {path} is not valid TOML"))?;
    for (key, value) in table {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            bail!("config file {path}: unknown key {key:?}; known keys: {}", KNOWN_KEYS.join(", "));
        }
        let env_name = format!("ORDERS_{}", key.to_ascii_uppercase());
        if std::env::var_os(&env_name).is_none() {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Array(items) => items.iter().map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string())).collect::<Vec<_>>().join(","),
                other => other.to_string(),
            };
            // SAFETY: called at the start of main, before any thread exists.
            unsafe { std::env::set_var(env_name, value) };
        }
    }
    Ok(())
}

const KNOWN_KEYS: &[&str] = &[
    "listen", "data_dir", "manifest", "mongo_uri", "mongo_database", "mongo_collection", "mongo_pool_size", "mongo_read_preference",
    "mongo_write_concern", "mongo_timeout_ms", "redis_url", "cache_ttl_secs", "store_timeout_ms", "sidecar_token",
    "sidecar_url", "sidecar_listen", "max_instances", "max_body_bytes", "log", "instances", "download_secret",
    "link_ttl_secs", "bundle_max_file_bytes", "bundle_max_bytes", "bundle_max_urls", "fetch_timeout_ms", "fetch_max_redirects",
    "fetch_allow", "bundle_workers", "bundle_downloads", "bundle_claim_timeout_ms", "fetch_resolve", "fetch_min_bytes_per_sec",
    "bundle_deadline_ms", "bundle_max_retries", "bundle_max_queued", "bundle_max_queued_per_client", "auth", "default_rate_limit", "jwt_issuer", "jwt_audience", "jwks_url",
    "max_streams", "queue_timeout_ms", "request_timeout_ms", "request_cpu_ms", "stream_timeout_ms",
    "max_instance_memory_mb", "body_timeout_ms", "max_connections", "header_timeout_ms", "idle_timeout_ms",
    "sidecar_failover_urls", "sidecar_timeout_ms", "sidecars", "max_restarts_per_minute",
];

/// Where the stores are, shared by `up`, `sidecar` and `cluster`. No
/// `Debug`: the URIs may hold passwords.
#[derive(Clone, Args)]
pub struct StoreOptions {
    /// Directory for the embedded store and compiled components.
    #[arg(long, env = "ORDERS_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,
    /// MongoDB URI (credentials and authSource allowed); the embedded store is used when absent.
    #[arg(long, env = "ORDERS_MONGO_URI", hide_env_values = true)]
    pub mongo_uri: Option<String>,
    /// MongoDB database name.
    #[arg(long, env = "ORDERS_MONGO_DATABASE", default_value = "orders_db")]
    pub mongo_database: String,
    /// MongoDB collection holding the orders.
    #[arg(long, env = "ORDERS_MONGO_COLLECTION", default_value = "orders")]
    pub mongo_collection: String,
    /// Maximum MongoDB connections per sidecar.
    #[arg(long, env = "ORDERS_MONGO_POOL_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub mongo_pool_size: u32,
    /// Read preference: primary, primaryPreferred, secondary, secondaryPreferred or nearest.
    #[arg(long, env = "ORDERS_MONGO_READ_PREFERENCE", default_value = "primary",
          value_parser = ["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"])]
    pub mongo_read_preference: String,
    /// Write concern: "majority" or a number of nodes.
    #[arg(long, env = "ORDERS_MONGO_WRITE_CONCERN", default_value = "majority")]
    pub mongo_write_concern: String,
    /// Connect and server-selection timeout for MongoDB, in milliseconds.
    #[arg(long, env = "ORDERS_MONGO_TIMEOUT_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60000))]
    pub mongo_timeout_ms: u64,
    /// Redis URL for the shared cache; an in-process cache is used when absent.
    #[arg(long, env = "ORDERS_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// How long cached orders and pages live, in seconds.
    #[arg(long, env = "ORDERS_CACHE_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub cache_ttl_secs: u64,
    /// Upper bound on one store operation, in milliseconds; past it the API answers 503 + Retry-After.
    #[arg(long, env = "ORDERS_STORE_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=120000))]
    pub store_timeout_ms: u64,
    #[command(flatten)]
    pub bundles: BundleOptions,
}

impl StoreOptions {
    /// Where the API keys and the audit trail of this store are.
    pub fn key_store(&self, data_dir: &Path) -> crate::keys::KeyStoreOptions {
        crate::keys::KeyStoreOptions {
            data_dir: data_dir.to_path_buf(),
            mongo_uri: self.mongo_uri.clone(),
            mongo_database: self.mongo_database.clone(),
            mongo_timeout_ms: self.mongo_timeout_ms,
        }
    }

    /// MongoDB's settings, when a URI is configured.
    pub fn mongo_settings(&self) -> Option<MongoSettings> {
        let timeout = Duration::from_millis(self.mongo_timeout_ms);
        self.mongo_uri.as_ref().map(|uri| MongoSettings {
            uri: uri.clone(),
            database: self.mongo_database.clone(),
            max_pool_size: self.mongo_pool_size,
            connect_timeout: timeout,
            server_selection_timeout: timeout,
            write_concern: self.mongo_write_concern.clone(),
            read_preference: self.mongo_read_preference.clone(),
            collection_names: HashMap::from([("orders".to_owned(), self.mongo_collection.clone())]),
        })
    }

    /// The prefix of every Redis key of this database's cache, queues and logs.
    pub fn redis_namespace(&self) -> String {
        format!("orders:{}", self.mongo_database)
    }

    /// Where the embedded store lives inside the data directory.
    pub fn embedded_store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    pub fn sidecar_config(&self, token: &str, download_secret: &str, auth: AuthSettings) -> Result<SidecarConfig> {
        let bundles = self.bundles.settings(download_secret.to_owned())?;
        Ok(SidecarConfig {
            token: token.to_owned(),
            data_dir: self.embedded_store_dir(),
            mongo: self.mongo_settings(),
            redis_url: self.redis_url.clone(),
            redis_namespace: self.redis_namespace(),
            cache_ttl: Duration::from_secs(self.cache_ttl_secs),
            cache_max_entries: 100_000,
            store_timeout: Duration::from_millis(self.store_timeout_ms),
            collections: vec!["orders".to_owned()],
            streams: vec!["bundles".to_owned()],
            events_ttl: bundles.events_ttl(),
            stream_limits: self.bundles.stream_limits(),
            bundles: (bundles.workers > 0).then_some(bundles),
            auth,
        })
    }

    /// The same options as command-line flags, for child processes.
    pub fn to_args(&self, data_dir: &Path) -> Vec<String> {
        vec![
            "--data-dir".into(), data_dir.display().to_string(),
            "--mongo-database".into(), self.mongo_database.clone(),
            "--mongo-collection".into(), self.mongo_collection.clone(),
            "--mongo-pool-size".into(), self.mongo_pool_size.to_string(),
            "--mongo-read-preference".into(), self.mongo_read_preference.clone(),
            "--mongo-write-concern".into(), self.mongo_write_concern.clone(),
            "--mongo-timeout-ms".into(), self.mongo_timeout_ms.to_string(),
            "--cache-ttl-secs".into(), self.cache_ttl_secs.to_string(),
            "--store-timeout-ms".into(), self.store_timeout_ms.to_string(),
        ]
        .into_iter()
        .chain(self.bundles.to_args())
        .collect()
    }

    /// URIs may hold passwords: they reach child processes by environment,
    /// not argv, which `ps` shows to every user.
    pub fn secret_env(&self) -> HashMap<&'static str, String> {
        let mut env = HashMap::new();
        if let Some(uri) = &self.mongo_uri {
            env.insert("ORDERS_MONGO_URI", uri.clone());
        }
        if let Some(url) = &self.redis_url {
            env.insert("ORDERS_REDIS_URL", url.clone());
        }
        env
    }
}

/// How the runner serves the components.
#[derive(Debug, Clone, Args)]
pub struct RunnerOptions {
    /// The Spin manifest to serve.
    #[arg(long, env = "ORDERS_MANIFEST", default_value = "spin.toml")]
    pub manifest: PathBuf,
    /// Requests served at once (each may hold a router and a chained instance); more requests queue.
    #[arg(long, env = "ORDERS_MAX_INSTANCES", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub max_instances: u32,
    /// Largest request body the runner reads, in bytes (the API itself limits orders to 64 KiB).
    #[arg(long, env = "ORDERS_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Streaming responses (event streams, large downloads) held at once; more get 503 + Retry-After.
    /// Must be below --max-instances; default half of it.
    #[arg(long, env = "ORDERS_MAX_STREAMS", value_parser = clap::value_parser!(u32).range(0..=10000))]
    pub max_streams: Option<u32>,
    /// Longest wait for a free instance, in milliseconds; then 503 + Retry-After.
    #[arg(long, env = "ORDERS_QUEUE_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub queue_timeout_ms: u64,
    /// Longest time a function may take to its response head, in milliseconds; then 504.
    #[arg(long, env = "ORDERS_REQUEST_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub request_timeout_ms: u64,
    /// Most time one request's code may run on a runner thread, in milliseconds; then 504.
    #[arg(long, env = "ORDERS_REQUEST_CPU_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub request_cpu_ms: u64,
    /// Longest life of a streaming response, in milliseconds.
    #[arg(long, env = "ORDERS_STREAM_TIMEOUT_MS", default_value_t = 900_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub stream_timeout_ms: u64,
    /// Largest linear memory one instance may grow, in MiB; past it the function gets 503.
    #[arg(long, env = "ORDERS_MAX_INSTANCE_MEMORY_MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_instance_memory_mb: u64,
    /// Longest time to receive a request body, in milliseconds; then 408.
    #[arg(long, env = "ORDERS_BODY_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub body_timeout_ms: u64,
    /// Client connections open at once; one more gets 503 + Retry-After and is closed.
    #[arg(long, env = "ORDERS_MAX_CONNECTIONS", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Longest time to receive a request head (from accept for the first), in milliseconds; then the connection closes.
    #[arg(long, env = "ORDERS_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub header_timeout_ms: u64,
    /// Longest silence of a keep-alive connection between requests, in milliseconds.
    #[arg(long, env = "ORDERS_IDLE_TIMEOUT_MS", default_value_t = 75_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub idle_timeout_ms: u64,
    /// Do not build the components, even if they are missing or older than their sources.
    #[arg(long, env = "ORDERS_NO_BUILD")]
    pub no_build: bool,
}

impl RunnerOptions {
    /// The runner's bounds, checked together.
    pub fn limits(&self) -> Result<Limits> {
        let ms = Duration::from_millis;
        let limits = Limits {
            max_instances: self.max_instances,
            max_streams: self.max_streams.unwrap_or_else(|| Limits::default_streams(self.max_instances)),
            queue_timeout: ms(self.queue_timeout_ms),
            request_timeout: ms(self.request_timeout_ms),
            request_cpu: ms(self.request_cpu_ms),
            stream_timeout: ms(self.stream_timeout_ms),
            instance_memory_bytes: (self.max_instance_memory_mb as usize) << 20,
            max_body_bytes: self.max_body_bytes,
            body_timeout: ms(self.body_timeout_ms),
            max_connections: self.max_connections as usize,
            header_timeout: ms(self.header_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
        };
        limits.check()?;
        Ok(limits)
    }

    /// The same options as command-line flags, for the instances of a cluster.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--max-instances".into(), self.max_instances.to_string(),
            "--max-body-bytes".into(), self.max_body_bytes.to_string(),
            "--queue-timeout-ms".into(), self.queue_timeout_ms.to_string(),
            "--request-timeout-ms".into(), self.request_timeout_ms.to_string(),
            "--request-cpu-ms".into(), self.request_cpu_ms.to_string(),
            "--stream-timeout-ms".into(), self.stream_timeout_ms.to_string(),
            "--max-instance-memory-mb".into(), self.max_instance_memory_mb.to_string(),
            "--body-timeout-ms".into(), self.body_timeout_ms.to_string(),
            "--max-connections".into(), self.max_connections.to_string(),
            "--header-timeout-ms".into(), self.header_timeout_ms.to_string(),
            "--idle-timeout-ms".into(), self.idle_timeout_ms.to_string(),
        ];
        if let Some(streams) = self.max_streams {
            args.extend(["--max-streams".into(), streams.to_string()]);
        }
        args
    }
}

/// Connections the kernel may hold for `accept` (it caps this at
/// net.core.somaxconn). std's default of 128 overflows when a few hundred
/// clients connect at once: their SYNs are dropped and they wait a second
/// or more to retry, which looks like an outage.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `address`, turning "address in use" into a message that says what to do.
pub async fn bind(address: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener> {
    let listen = || -> std::io::Result<tokio::net::TcpListener> {
        let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // As std's TcpListener::bind does on Unix: a restart may bind while
        // old connections are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|error| match error.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "port {} on {} is already in use by another process (find it with `ss -ltnp 'sport = :{}'`); \
             stop it or choose another address with {flag}",
            address.port(), address.ip(), address.port()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "not allowed to listen on {address}; ports below 1024 need privileges: choose another with {flag}"
        ),
        _ => anyhow::anyhow!("cannot listen on {address} ({flag}): {error}"),
    })
}

pub fn manifest_dir(manifest: &Path) -> PathBuf {
    manifest.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}
