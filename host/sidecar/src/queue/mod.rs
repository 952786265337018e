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

#[async_trait]
pub trait JobQueue: Send + Sync {
    fn backend(&self) -> &'static str;
    async fn append(&self, stream: &str, payload: &Value) -> QueueResult<String>;
    /// Up to `count` jobs nobody holds, or held longer than `min_idle_ms`
    /// by a consumer that did not acknowledge them.
    async fn claim(&self, stream: &str, consumer: &str, count: usize, min_idle_ms: u64) -> QueueResult<Vec<Job>>;
    /// Tells the queue `consumer` is still working on these jobs, so they are
    /// not handed to another consumer after `min_idle` while it does.
    async fn touch(&self, stream: &str, consumer: &str, ids: &[String]) -> QueueResult<()>;
    /// Removes the jobs; returns how many were pending.
    async fn ack(&self, stream: &str, ids: &[String]) -> QueueResult<u64>;
    /// Jobs appended and not yet acknowledged.
    async fn depth(&self, stream: &str) -> QueueResult<u64>;
}
