//! The sidecar: the data bridge between per-request components and the
//! stores they cannot hold connections to (MongoDB or the embedded SQLite
//! store, Redis or the in-process cache), behind a small authenticated
//! internal HTTP API.

pub mod api;
pub mod auth;
mod api_events;
mod api_jobs;
mod api_reports;
pub mod blobs;
pub mod bundles;
pub mod cache;
pub mod data;
mod durable_sqlite;
pub mod events;
pub mod metrics;
pub mod queue;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use orders_telemetry::Registry;

use crate::auth::limiter::Limiter;
use crate::auth::{Auth, AuthSettings};
use crate::blobs::BlobStore;
use crate::bundles::{BundleSettings, Pipeline};
use crate::cache::Cache;
use crate::cache::memory::MemoryCache;
use crate::cache::redis::RedisCache;
use crate::data::DataService;
use crate::events::EventLog;
use crate::events::redis::RedisEvents;
use crate::events::sqlite::SqliteEvents;
use crate::metrics::SidecarMetrics;
use crate::queue::{JobQueue, StreamLimits};
use crate::queue::redis::RedisQueue;
use crate::queue::sqlite::SqliteQueue;
use crate::store::DocumentStore;
use crate::store::keys::KeyStore;
use crate::store::keys::mongo::MongoKeys;
use crate::store::keys::sqlite::SqliteKeys;
use crate::store::OpenedStore;
use crate::store::mongo::MongoSettings;
use crate::store::sqlite::SqliteStore;

/// Everything the sidecar needs to start, validated by the CLI. `Debug`
/// leaves the token and the store URIs out.
#[derive(Clone)]
pub struct SidecarConfig {
    pub token: String,
    pub data_dir: PathBuf,
    pub mongo: Option<MongoSettings>,
    pub redis_url: Option<String>,
    pub redis_namespace: String,
    pub cache_ttl: Duration,
    pub cache_max_entries: usize,
    pub store_timeout: Duration,
    pub collections: Vec<String>,
    /// Job streams (and event logs of the same names) components may use.
    pub streams: Vec<String>,
    /// The bundle worker's settings; `None` runs no workers here.
    pub bundles: Option<BundleSettings>,
    /// How long event logs live past their last append when no worker says.
    pub events_ttl: Duration,
    /// How many jobs each stream may hold (queued and running).
    pub stream_limits: StreamLimits,
    /// How callers are checked (docs/adr/0010).
    pub auth: AuthSettings,
}

impl std::fmt::Debug for SidecarConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarConfig")
            .field("token", &"<redacted>")
            .field("data_dir", &self.data_dir)
            .field("mongo", &self.mongo.as_ref().map(|m| &m.database))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .field("redis_namespace", &self.redis_namespace)
            .field("cache_ttl", &self.cache_ttl)
            .field("store_timeout", &self.store_timeout)
            .field("collections", &self.collections)
            .field("streams", &self.streams)
            .field("bundles", &self.bundles)
            .field("stream_limits", &self.stream_limits)
            .finish_non_exhaustive()
    }
}

/// The cache, job queue, event logs and rate limiter: all in Redis, or all embedded.
type Backends = (Arc<dyn Cache>, Arc<dyn JobQueue>, Arc<dyn EventLog>, Limiter);

/// A started sidecar: its API as an axum router (served over TCP, or
/// called in-process by the runner) and its metrics.
#[derive(Clone)]
pub struct Sidecar {
    pub router: axum::Router,
    pub metrics: SidecarMetrics,
    pub data: Arc<DataService>,
    /// API keys and the audit trail, in the same store as the documents.
    pub keys: Arc<dyn KeyStore>,
}

impl Sidecar {
    pub async fn start(config: SidecarConfig, registry: Registry) -> Result<Self> {
        let metrics = SidecarMetrics::new(registry);
        let opened = store::open(config.mongo.as_ref(), &config.data_dir).await?;
        let keys: Arc<dyn KeyStore> = match &opened {
            OpenedStore::Mongo(store) => Arc::new(MongoKeys::open(store.database().clone()).await?),
            OpenedStore::Embedded(store) => {
                spawn_key_expiry(store.clone());
                Arc::new(SqliteKeys::open(&config.data_dir)?)
            }
        };
        let store = opened.documents();
        if !config.auth.enabled {
            tracing::warn!("access control is OFF (--auth off): anyone who reaches the API may read, change and delete every order");
        }
        let (cache, queue, events, limiter): Backends = match &config.redis_url {
            Some(url) => {
                let cache = RedisCache::connect(url, &config.redis_namespace, config.cache_ttl).await?;
                let queue = RedisQueue::new(cache.connection(), &config.redis_namespace);
                let events = RedisEvents::new(cache.connection(), &config.redis_namespace);
                let limiter = Limiter::redis(cache.connection(), &config.redis_namespace);
                (Arc::new(cache), Arc::new(queue), Arc::new(events), limiter)
            }
            None => (
                Arc::new(MemoryCache::new(config.cache_max_entries, config.cache_ttl)),
                Arc::new(SqliteQueue::open(&config.data_dir)?),
                Arc::new(SqliteEvents::open(&config.data_dir)?),
                Limiter::memory(),
            ),
        };
        let auth = Arc::new(Auth::new(config.auth.clone(), keys.clone(), limiter, config.store_timeout));
        let blobs = Arc::new(BlobStore::open(config.data_dir.join("blobs"))?);
        let events_ttl = config.bundles.as_ref().map_or(config.events_ttl, BundleSettings::events_ttl);
        if let Some(settings) = config.bundles.clone() {
            let work_root = config.data_dir.join("bundles-work");
            Pipeline::new(settings, queue.clone(), events.clone(), blobs.clone(), work_root, metrics.clone())?.spawn();
        }
        let data = Arc::new(DataService::new(store.clone(), cache, metrics.clone(), config.store_timeout));
        metrics.cache_degraded.set(0);
        spawn_pool_gauges(store, metrics.clone());
        spawn_queue_gauges(queue.clone(), config.streams.clone(), metrics.clone());
        let state = api::ApiState {
            data: data.clone(),
            queue,
            blobs,
            metrics: metrics.clone(),
            token: Arc::from(config.token.as_str()),
            collections: Arc::from(config.collections.clone()),
            streams: Arc::from(config.streams.clone()),
            events,
            events_ttl,
            stream_limits: config.stream_limits,
            auth,
        };
        Ok(Self { router: api::router(state), metrics, data, keys })
    }
}

/// Refreshes the pool gauges and the commit counters every second, so any
/// `/metrics` that renders this registry (the sidecar's own or the runner's
/// in `orders up`) has them. The store counts its commits itself (its writer
/// thread knows no registry); the counters here copy its totals. (Looking
/// the series up each time costs a lock once a second.)
fn spawn_pool_gauges(store: Arc<dyn DocumentStore>, metrics: SidecarMetrics) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            if let Some((in_use, idle)) = store.pool_stats() {
                metrics.pool_connections.series(&[("state", "in_use")]).set(in_use as i64);
                metrics.pool_connections.series(&[("state", "idle")]).set(idle as i64);
            }
            if let Some(stats) = store.commit_stats() {
                let backend = [("backend", store.backend())];
                metrics.store_commits.series(&backend).inner().store(stats.commits, Ordering::Relaxed);
                metrics.store_committed_writes.series(&backend).inner().store(stats.writes, Ordering::Relaxed);
            }
        }
    });
}

fn spawn_queue_gauges(queue: Arc<dyn JobQueue>, streams: Vec<String>, metrics: SidecarMetrics) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        loop {
            every.tick().await;
            for stream in &streams {
                if let Ok(depth) = queue.depth(stream).await {
                    metrics.queue_depth.series(&[("stream", stream.as_str())]).set(depth as i64);
                }
            }
        }
    });
}

fn spawn_key_expiry(store: Arc<SqliteStore>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(600));
        loop {
            every.tick().await;
            if let Err(error) = store.expire_idempotency_keys().await {
                tracing::warn!(%error, "could not expire old idempotency keys");
            }
        }
    });
}

/// Resident memory of this process, for `/metrics`.
pub fn process_metrics() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find(|line| line.starts_with(field))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    format!(
        "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n\
         # HELP process_resident_memory_peak_bytes Peak resident memory.\n# TYPE process_resident_memory_peak_bytes gauge\nprocess_resident_memory_peak_bytes {}\n",
        kib("VmRSS:") * 1024,
        kib("VmHWM:") * 1024
    )
}

/// Calls the router in-process. Neither body is collected: the handler
/// reads the request's as the caller writes it, and the caller reads the
/// answer's as the handler produces it (a blob streams from its file).
pub async fn call_router<B>(router: axum::Router, request: http::Request<B>) -> http::Response<axum::body::Body>
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use tower::ServiceExt;
    match router.oneshot(request.map(axum::body::Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
