//! The sidecar's metrics: its API operations, the store behind it, the
//! cache, and the pool.

use std::time::Duration;

use orders_telemetry::{CounterVec, GaugeVec, HistogramVec, Registry};

#[derive(Clone)]
pub struct SidecarMetrics {
    pub registry: Registry,
    operations: CounterVec,
    operation_duration: HistogramVec,
    store_duration: HistogramVec,
    store_errors: CounterVec,
    cache_requests: CounterVec,
    pub cache_degraded: GaugeVec,
    pub pool_connections: GaugeVec,
    pub store_commits: CounterVec,
    pub store_committed_writes: CounterVec,
    pub queue_depth: GaugeVec,
    bundle_jobs: CounterVec,
    bundle_job_duration: HistogramVec,
    bundle_downloads: CounterVec,
    nonconforming_documents: CounterVec,
}

impl SidecarMetrics {
    pub fn new(registry: Registry) -> Self {
        Self {
            operations: registry.counter("orders_sidecar_operations_total", "Sidecar API operations, by operation and outcome."),
            operation_duration: registry.histogram("orders_sidecar_operation_duration_seconds", "Sidecar API operation latency (the sidecar hop), by operation."),
            store_duration: registry.histogram("orders_store_operation_duration_seconds", "Store operation latency, by backend and operation."),
            store_errors: registry.counter("orders_store_errors_total", "Store operations that failed or timed out, by backend and operation."),
            cache_requests: registry.counter("orders_cache_requests_total", "Cache lookups, by result (hit, miss, error, bypass)."),
            cache_degraded: registry.gauge("orders_cache_degraded", "1 while the cache is unreachable and reads go straight to the store."),
            pool_connections: registry.gauge("orders_store_pool_connections", "Store connections, by state (in_use, idle)."),
            store_commits: registry.counter("orders_store_commits_total", "Durable commits of the embedded store, each carrying one or more writes, by backend."),
            store_committed_writes: registry.counter("orders_store_committed_writes_total", "Writes carried by those commits (writes per commit = this / commits), by backend."),
            queue_depth: registry.gauge("orders_queue_depth", "Jobs appended and not yet acknowledged, by stream."),
            bundle_jobs: registry.counter("orders_bundle_jobs_total", "Bundle jobs ended, by outcome (ready, failed, interrupted, gave_up, duplicate, malformed)."),
            bundle_job_duration: registry.histogram("orders_bundle_job_duration_seconds", "Time from claiming a bundle job to its end, by outcome."),
            bundle_downloads: registry.counter("orders_bundle_downloads_total", "URLs fetched for bundles, by outcome (ok or the error code)."),
            nonconforming_documents: registry.counter(
                "orders_nonconforming_documents_served_total",
                "Stored documents served that do not meet the contract (written by the old service), by collection.",
            ),
            registry,
        }
    }

    pub fn operation(&self, operation: &str, outcome: &str, elapsed: Duration) {
        self.operations.inc(&[("operation", operation), ("outcome", outcome)]);
        self.operation_duration.observe(&[("operation", operation)], elapsed);
    }

    pub fn store(&self, backend: &str, operation: &str, elapsed: Duration, failed: bool) {
        self.store_duration.observe(&[("backend", backend), ("operation", operation)], elapsed);
        if failed {
            self.store_errors.inc(&[("backend", backend), ("operation", operation)]);
        }
    }

    pub fn bundle_job(&self, outcome: &str, elapsed: Duration) {
        self.bundle_jobs.inc(&[("outcome", outcome)]);
        self.bundle_job_duration.observe(&[("outcome", outcome)], elapsed);
    }

    pub fn bundle_download(&self, outcome: &str) {
        self.bundle_downloads.inc(&[("outcome", outcome)]);
    }

    pub fn nonconforming(&self, collection: &str, documents: u64) {
        self.nonconforming_documents.with(&[("collection", collection)]).fetch_add(documents, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn cache(&self, result: &str) {
        self.cache_requests.inc(&[("result", result)]);
    }
}
