//! The options shared by several commands, each declared once: where the
//! store is, how the runner serves, what the components are told. Values are
//! parsed by clap into their types (see `settings::values`); flags beat
//! `ORDERS_*` environment variables, which beat the settings file
//! (`settings::file`), which beats the defaults. Each group is also
//! `Serialize`, with its keys as the file names them, so `orders cluster`
//! hands its children their settings whole (`settings::child`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use orders_runner::Limits;
use orders_sidecar::SidecarConfig;
use orders_sidecar::auth::AuthSettings;
use orders_sidecar::store::mongo::MongoSettings;
use orders_vocabulary::names::{BUNDLE_STREAM, ORDERS_COLLECTION};
use serde::Serialize;

use crate::bundle_options::BundleOptions;
use crate::settings::secret::Secret;
use crate::settings::values::{ReadPreference, WriteConcern, check_mongo_uri, check_redis_url};

/// The data directory, which every long-running command and store tool uses.
#[derive(Debug, Clone, Args, Serialize)]
pub struct DataDir {
    /// Directory for the embedded store, compiled components and cluster files.
    #[arg(long, env = "ORDERS_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,
}

impl DataDir {
    /// Where the embedded store lives inside the data directory.
    pub fn embedded_store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

/// Where the product's data is: the data directory, or MongoDB when a URI
/// is set. The key and audit commands need only this. No `Debug` of the URI:
/// it may hold a password.
#[derive(Debug, Clone, Args, Serialize)]
pub struct StoreLocation {
    #[command(flatten)]
    #[serde(flatten)]
    pub dir: DataDir,
    /// MongoDB URI (credentials and authSource allowed); the embedded store is used when absent.
    #[arg(long, env = "ORDERS_MONGO_URI", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongo_uri: Option<Secret>,
    /// MongoDB database name.
    #[arg(long, env = "ORDERS_MONGO_DATABASE", default_value = "orders_db")]
    pub mongo_database: String,
    /// Connect and server-selection timeout for MongoDB, in milliseconds.
    #[arg(long, env = "ORDERS_MONGO_TIMEOUT_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60000))]
    pub mongo_timeout_ms: u64,
}

impl StoreLocation {
    pub fn check(&self) -> Result<()> {
        if let Some(uri) = &self.mongo_uri {
            check_mongo_uri(uri.expose()).map_err(|why| anyhow::anyhow!("--mongo-uri / ORDERS_MONGO_URI {why}"))?;
        }
        Ok(())
    }

    /// MongoDB's settings with the given pool and consistency, when a URI is set.
    pub fn mongo_settings(&self, max_pool_size: u32, write: WriteConcern, read: ReadPreference,
        collection_names: HashMap<String, String>) -> Option<MongoSettings> {
        let timeout = Duration::from_millis(self.mongo_timeout_ms);
        self.mongo_uri.as_ref().map(|uri| MongoSettings {
            uri: uri.expose().to_owned(),
            database: self.mongo_database.clone(),
            max_pool_size,
            connect_timeout: timeout,
            server_selection_timeout: timeout,
            write_concern: write.to_driver(),
            read_preference: read.to_driver(),
            collection_names,
            read_time_limit: None,
        })
    }
}

/// Where the stores are and how they are used, shared by `up`, `sidecar`,
/// `cluster` and the store tools.
#[derive(Debug, Clone, Args, Serialize)]
pub struct StoreOptions {
    #[command(flatten)]
    #[serde(flatten)]
    pub location: StoreLocation,
    /// MongoDB collection holding the orders.
    #[arg(long, env = "ORDERS_MONGO_COLLECTION", default_value = "orders")]
    pub mongo_collection: String,
    /// Maximum MongoDB connections per sidecar.
    #[arg(long, env = "ORDERS_MONGO_POOL_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub mongo_pool_size: u32,
    /// Read preference: primary, primaryPreferred, secondary, secondaryPreferred or nearest.
    #[arg(long, env = "ORDERS_MONGO_READ_PREFERENCE", value_enum, default_value_t = ReadPreference::Primary)]
    pub mongo_read_preference: ReadPreference,
    /// Write concern: "majority" or a number of nodes.
    #[arg(long, env = "ORDERS_MONGO_WRITE_CONCERN", default_value = "majority")]
    pub mongo_write_concern: WriteConcern,
    /// Redis URL for the shared cache; an in-process cache is used when absent.
    #[arg(long, env = "ORDERS_REDIS_URL", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<Secret>,
    /// How long cached orders and pages live, in seconds.
    #[arg(long, env = "ORDERS_CACHE_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub cache_ttl_secs: u64,
    /// Upper bound on one store operation, in milliseconds; past it the API answers 503 + Retry-After.
    #[arg(long, env = "ORDERS_STORE_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=120000))]
    pub store_timeout_ms: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub bundles: BundleOptions,
}

impl StoreOptions {
    pub fn data_dir(&self) -> &Path {
        &self.location.dir.data_dir
    }

    pub fn check(&self) -> Result<()> {
        self.location.check()?;
        if let Some(url) = &self.redis_url {
            check_redis_url(url.expose()).map_err(|why| anyhow::anyhow!("--redis-url / ORDERS_REDIS_URL is invalid: {why}"))?;
        }
        self.bundles.check()
    }

    /// MongoDB's settings, when a URI is configured; reads carry the store
    /// timeout to the server.
    pub fn mongo_settings(&self) -> Option<MongoSettings> {
        let settings = self.location.mongo_settings(
            self.mongo_pool_size,
            self.mongo_write_concern,
            self.mongo_read_preference,
            HashMap::from([(ORDERS_COLLECTION.to_owned(), self.mongo_collection.clone())]),
        )?;
        Some(MongoSettings { read_time_limit: Some(Duration::from_millis(self.store_timeout_ms)), ..settings })
    }

    /// The prefix of every Redis key of this database's cache, queues and logs.
    pub fn redis_namespace(&self) -> String {
        format!("orders:{}", self.location.mongo_database)
    }

    /// Where the embedded store lives inside the data directory.
    pub fn embedded_store_dir(&self) -> PathBuf {
        self.location.dir.embedded_store_dir()
    }

    pub fn sidecar_config(&self, token: &Secret, download_secret: &Secret, auth: AuthSettings) -> Result<SidecarConfig> {
        let bundles = self.bundles.settings(download_secret.expose().to_owned())?;
        Ok(SidecarConfig {
            token: token.expose().to_owned(),
            data_dir: self.embedded_store_dir(),
            mongo: self.mongo_settings(),
            redis_url: self.redis_url.as_ref().map(|url| url.expose().to_owned()),
            redis_namespace: self.redis_namespace(),
            cache_ttl: Duration::from_secs(self.cache_ttl_secs),
            cache_max_entries: 100_000,
            store_timeout: Duration::from_millis(self.store_timeout_ms),
            collections: vec![ORDERS_COLLECTION.to_owned()],
            streams: vec![BUNDLE_STREAM.to_owned()],
            events_ttl: bundles.events_ttl(),
            stream_limits: self.bundles.stream_limits(),
            bundles: (bundles.workers > 0).then_some(bundles),
            auth,
        })
    }
}

/// A token or secret given by flag or environment: at least 16 characters,
/// checked with a message that names the key and not the value.
pub fn check_secret(secret: &Secret, key: &str) -> Result<()> {
    if secret.expose().len() < 16 {
        bail!("{key} must be at least 16 characters");
    }
    Ok(())
}

/// How the runner serves the components.
#[derive(Debug, Clone, Args, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
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
    /// Who picks the function of a method on /orders: "method" (the runner, from the manifest's
    /// tool.orders-runner tables) or "router" (the orders router component, as under Spin).
    #[arg(long, env = "ORDERS_ROUTING", value_enum, default_value_t = Routing::Method)]
    pub routing: Routing,
}

/// How requests for a route with tool tables reach their function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// The runner routes by method itself: one instance per request.
    Method,
    /// The route's router component chains to the function, as Spin does.
    Router,
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
