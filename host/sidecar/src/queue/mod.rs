//! Durable job streams for background work (the bundle pipeline): append a
//! job, claim a batch as a named consumer, acknowledge when done. A job
//! claimed by a consumer that then dies becomes claimable again after
//! `min_idle`, so every appended job is processed at least once.
//!
//! Two implementations: Redis Streams with a consumer group when Redis is
//! configured (shared by every sidecar), SQLite otherwise.

pub mod redis;
pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: String,
    pub payload: Value,
    /// How many times the job has been handed out, this time included.
    pub deliveries: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("queue unavailable: {0}")]
pub struct QueueError(pub String);

pub type QueueResult<T> = Result<T, QueueError>;

/// How many jobs a stream may hold (queued and running) when something is
/// appended: overall, and per limit key (the client that asked for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendLimits<'a> {
    pub max_queued: u64,
    /// The key the job counts against, and how many it may have at once.
    pub per_key: Option<(&'a str, u64)>,
}

/// The configured bounds of every stream components append to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_queued: u64,
    pub max_queued_per_key: u64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_queued: 1000,
            max_queued_per_key: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    Added(String),
    /// The stream holds `max_queued` jobs.
    StreamFull,
    /// The key holds its share.
    KeyFull,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    fn backend(&self) -> &'static str;
    async fn append(&self, stream: &str, payload: &Value) -> QueueResult<String>;
    /// Appends unless the stream or the key is at its limit, decided
    /// atomically with the append (concurrent appends cannot overshoot).
    /// A job counts against its key until it is acknowledged.
    async fn append_within(
        &self,
        stream: &str,
        payload: &Value,
        limits: &AppendLimits<'_>,
    ) -> QueueResult<AppendOutcome>;
    /// Up to `count` jobs nobody holds, or held longer than `min_idle_ms`
    /// by a consumer that did not acknowledge them.
    async fn claim(
        &self,
        stream: &str,
        consumer: &str,
        count: usize,
        min_idle_ms: u64,
    ) -> QueueResult<Vec<Job>>;
    /// Tells the queue `consumer` is still working on `job`, so it is not
    /// handed to another consumer after `min_idle` while it does. Fenced:
    /// only the claim that handed out `job` (same consumer, same delivery
    /// count) can renew it; `false` when it was taken over (or finished),
    /// and then the caller must stop working on it.
    async fn touch(&self, stream: &str, consumer: &str, job: &Job) -> QueueResult<bool>;
    /// Removes the jobs; returns how many were pending.
    async fn ack(&self, stream: &str, ids: &[String]) -> QueueResult<u64>;
    /// Jobs appended and not yet acknowledged.
    async fn depth(&self, stream: &str) -> QueueResult<u64>;
}
