//! The sidecar's metrics: its API operations, the store behind it, the
//! cache, the pool, the queue and the bundle jobs.
//!
//! Operations, store calls and cache lookups are observed on every call, so
//! each of their series has a handle of its own, kept per value of their
//! closed labels and looked up in its family on first use: after that an
//! observation takes no lock and allocates nothing (see `orders_telemetry`).
//! Bundle jobs, downloads and reports are rare and their outcome and
//! collection labels open-ended, so they look their series up each time;
//! the pool and queue gauges are set from a timer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use orders_telemetry::{Counter, Family, Gauge, Histogram, Registry};

/// An operation of the sidecar's API, as its `operation` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    List,
    Get,
    Insert,
    Update,
    Delete,
    StreamAppend,
    StreamClaim,
    StreamAck,
    StreamDepth,
    BlobPut,
    BlobGet,
    BlobDelete,
    LogAppend,
    LogRead,
    MarkOnce,
    MarkReserve,
    MarkSpend,
    MarkRelease,
    Report,
}

impl Operation {
    /// How many there are (`operation as usize` indexes their handles).
    const COUNT: usize = Operation::Report as usize + 1;

    pub fn label(self) -> &'static str {
        match self {
            Operation::List => "list",
            Operation::Get => "get",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::StreamAppend => "stream_append",
            Operation::StreamClaim => "stream_claim",
            Operation::StreamAck => "stream_ack",
            Operation::StreamDepth => "stream_depth",
            Operation::BlobPut => "blob_put",
            Operation::BlobGet => "blob_get",
            Operation::BlobDelete => "blob_delete",
            Operation::LogAppend => "log_append",
            Operation::LogRead => "log_read",
            Operation::MarkOnce => "mark_once",
            Operation::MarkReserve => "mark_reserve",
            Operation::MarkSpend => "mark_spend",
            Operation::MarkRelease => "mark_release",
            Operation::Report => "report",
        }
    }
}

/// An operation of the document store, as its `operation` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    Ping,
    Get,
    List,
    Insert,
    Update,
    Delete,
}

impl StoreOperation {
    /// How many there are (`operation as usize` indexes their handles).
    const COUNT: usize = StoreOperation::Delete as usize + 1;

    pub fn label(self) -> &'static str {
        match self {
            StoreOperation::Ping => "ping",
            StoreOperation::Get => "get",
            StoreOperation::List => "list",
            StoreOperation::Insert => "insert",
            StoreOperation::Update => "update",
            StoreOperation::Delete => "delete",
        }
    }
}

/// What a cache lookup found, as its `result` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// Past its TTL but current: served while one reader reads it anew.
    Stale,
    /// The cache failed.
    Error,
    /// The cache was not asked: it failed a moment ago.
    Bypass,
}

impl CacheOutcome {
    /// How many there are (`result as usize` indexes their handles).
    const COUNT: usize = CacheOutcome::Bypass as usize + 1;

    fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Error => "error",
            CacheOutcome::Bypass => "bypass",
        }
    }
}

/// The sidecar's metrics, in one `Arc`: the API's state holds them, and
/// axum clones that state for every request.
#[derive(Clone)]
pub struct SidecarMetrics(Arc<Metrics>);

impl std::ops::Deref for SidecarMetrics {
    type Target = Metrics;

    fn deref(&self) -> &Metrics {
        &self.0
    }
}

/// The families and the series handles that [`SidecarMetrics`] shares.
pub struct Metrics {
    pub registry: Registry,
    pub cache_degraded: Gauge,
    pub pool_connections: Family<Gauge>,
    /// Durable commits of the embedded store, and the writes they carried:
    /// copied from the store's own totals once a second.
    pub store_commits: Family<Counter>,
    pub store_committed_writes: Family<Counter>,
    pub queue_depth: Family<Gauge>,
    families: Families,
    operations: [OperationSeries; Operation::COUNT],
    cache_requests: [OnceLock<Counter>; CacheOutcome::COUNT],
}

struct Families {
    operations: Family<Counter>,
    operation_duration: Family<Histogram>,
    store_duration: Family<Histogram>,
    store_errors: Family<Counter>,
    cache_requests: Family<Counter>,
    bundle_jobs: Family<Counter>,
    bundle_job_duration: Family<Histogram>,
    bundle_downloads: Family<Counter>,
    nonconforming_documents: Family<Counter>,
}

/// The handles of one API operation's series, each looked up on first use.
#[derive(Default)]
struct OperationSeries {
    /// By outcome: ok, error.
    outcomes: [OnceLock<Counter>; 2],
    duration: OnceLock<Histogram>,
}

impl SidecarMetrics {
    pub fn new(registry: Registry) -> Self {
        let operations = registry.counter(
            "orders_sidecar_operations_total",
            "Sidecar API operations, by operation and outcome.",
        );
        let operation_duration = registry.histogram(
            "orders_sidecar_operation_duration_seconds",
            "Sidecar API operation latency (the sidecar hop), by operation.",
        );
        let store_duration = registry.histogram(
            "orders_store_operation_duration_seconds",
            "Store operation latency, by backend and operation.",
        );
        let store_errors = registry.counter(
            "orders_store_errors_total",
            "Store operations that failed or timed out, by backend and operation.",
        );
        let cache_requests = registry.counter(
            "orders_cache_requests_total",
            "Cache lookups, by result (hit, miss, error, bypass).",
        );
        let cache_degraded = registry.unlabelled_gauge(
            "orders_cache_degraded",
            "1 while the cache is unreachable and reads go straight to the store.",
        );
        let pool_connections = registry.gauge(
            "orders_store_pool_connections",
            "Store connections, by state (in_use, idle).",
        );
        let store_commits = registry.counter(
            "orders_store_commits_total",
            "Durable commits of the embedded store, each carrying one or more writes, by backend.",
        );
        let store_committed_writes = registry.counter(
            "orders_store_committed_writes_total",
            "Writes carried by those commits (writes per commit = this / commits), by backend.",
        );
        let queue_depth = registry.gauge(
            "orders_queue_depth",
            "Jobs appended and not yet acknowledged, by stream.",
        );
        let bundle_jobs = registry.counter(
            "orders_bundle_jobs_total",
            "Bundle jobs ended, by outcome (ready, failed, interrupted, gave_up, duplicate, malformed).",
        );
        let bundle_job_duration = registry.histogram(
            "orders_bundle_job_duration_seconds",
            "Time from claiming a bundle job to its end, by outcome.",
        );
        let bundle_downloads = registry.counter(
            "orders_bundle_downloads_total",
            "URLs fetched for bundles, by outcome (ok or the error code).",
        );
        let nonconforming_documents = registry.counter(
            "orders_nonconforming_documents_served_total",
            "Stored documents served that do not meet the contract (written by the old service), by collection.",
        );
        let families = Families {
            operations,
            operation_duration,
            store_duration,
            store_errors,
            cache_requests,
            bundle_jobs,
            bundle_job_duration,
            bundle_downloads,
            nonconforming_documents,
        };
        Self(Arc::new(Metrics {
            families,
            operations: Default::default(),
            cache_requests: Default::default(),
            cache_degraded,
            pool_connections,
            store_commits,
            store_committed_writes,
            queue_depth,
            registry,
        }))
    }

    /// The store's series for `backend`, for the one store a data service
    /// has.
    pub fn store(&self, backend: &'static str) -> StoreMetrics {
        StoreMetrics {
            backend,
            metrics: self.clone(),
            operations: Default::default(),
        }
    }
}

impl Metrics {
    pub fn operation(&self, operation: Operation, failed: bool, elapsed: Duration) {
        let series = &self.operations[operation as usize];
        let outcome = if failed { "error" } else { "ok" };
        let counter = series.outcomes[usize::from(failed)].get_or_init(|| {
            self.families
                .operations
                .series(&[("operation", operation.label()), ("outcome", outcome)])
        });
        counter.inc();
        let histogram = series.duration.get_or_init(|| {
            self.families
                .operation_duration
                .series(&[("operation", operation.label())])
        });
        histogram.observe(elapsed);
    }

    pub fn cache(&self, result: CacheOutcome) {
        self.cache_requests[result as usize]
            .get_or_init(|| {
                self.families
                    .cache_requests
                    .series(&[("result", result.label())])
            })
            .inc();
    }

    pub fn bundle_job(&self, outcome: &str, elapsed: Duration) {
        self.families
            .bundle_jobs
            .series(&[("outcome", outcome)])
            .inc();
        self.families
            .bundle_job_duration
            .series(&[("outcome", outcome)])
            .observe(elapsed);
    }

    pub fn bundle_download(&self, outcome: &str) {
        self.families
            .bundle_downloads
            .series(&[("outcome", outcome)])
            .inc();
    }

    pub fn nonconforming(&self, collection: &str, documents: u64) {
        self.families
            .nonconforming_documents
            .series(&[("collection", collection)])
            .inc_by(documents);
    }
}

/// The series of one store backend's operations, each looked up on first
/// use.
pub struct StoreMetrics {
    backend: &'static str,
    metrics: SidecarMetrics,
    operations: [StoreSeries; StoreOperation::COUNT],
}

#[derive(Default)]
struct StoreSeries {
    duration: OnceLock<Histogram>,
    errors: OnceLock<Counter>,
}

impl StoreMetrics {
    pub fn observe(&self, operation: StoreOperation, elapsed: Duration, failed: bool) {
        let series = &self.operations[operation as usize];
        let labels = [("backend", self.backend), ("operation", operation.label())];
        series
            .duration
            .get_or_init(|| self.metrics.families.store_duration.series(&labels))
            .observe(elapsed);
        if failed {
            series
                .errors
                .get_or_init(|| self.metrics.families.store_errors.series(&labels))
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_series() {
        let metrics = SidecarMetrics::new(Registry::default());
        let store = metrics.store("sqlite");
        metrics.operation(Operation::Get, false, Duration::from_micros(20));
        metrics.operation(Operation::Get, false, Duration::from_micros(20));
        metrics.operation(Operation::MarkRelease, true, Duration::from_micros(20));
        store.observe(StoreOperation::Get, Duration::from_micros(200), false);
        store.observe(StoreOperation::Delete, Duration::from_micros(200), true);
        metrics.cache(CacheOutcome::Hit);
        metrics.cache(CacheOutcome::Bypass);
        metrics.bundle_download("too_large");
        metrics.nonconforming("orders", 3);
        let text = metrics.registry.render();
        for line in [
            "orders_sidecar_operations_total{operation=\"get\",outcome=\"ok\"} 2\n",
            "orders_sidecar_operations_total{operation=\"mark_release\",outcome=\"error\"} 1\n",
            "orders_sidecar_operation_duration_seconds_count{operation=\"get\"} 2\n",
            "orders_store_operation_duration_seconds_count{backend=\"sqlite\",operation=\"get\"} 1\n",
            "orders_store_errors_total{backend=\"sqlite\",operation=\"delete\"} 1\n",
            "orders_cache_requests_total{result=\"hit\"} 1\n",
            "orders_cache_requests_total{result=\"bypass\"} 1\n",
            "orders_bundle_downloads_total{outcome=\"too_large\"} 1\n",
            "orders_nonconforming_documents_served_total{collection=\"orders\"} 3\n",
            "orders_cache_degraded 0\n",
            "# TYPE orders_bundle_jobs_total counter\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(
            text.matches("orders_store_errors_total{").count(),
            1,
            "{text}"
        );
    }
}
