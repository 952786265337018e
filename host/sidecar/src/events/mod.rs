//! Per-key event logs and one-time marks: what the bundle pipeline shares
//! between the worker that makes progress and the components that report it.
//!
//! An event log is an append-only list of `(id, event, data)` per key, read
//! from just after a given id, which is what Server-Sent Events resume with.
//! A mark is taken at most once per key until it expires (one-time links).
//!
//! Redis holds both when it is configured (a stream per key, `SET NX`), so
//! every sidecar sees every bundle; SQLite beside the embedded store otherwise.

pub mod redis;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::queue::QueueError;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Opaque and increasing within one log.
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// `after` was not an id this backend hands out.
#[derive(Debug, thiserror::Error)]
#[error("not an event id: {0}")]
pub struct BadEventId(pub String);

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    BadId(#[from] BadEventId),
    #[error(transparent)]
    Unavailable(#[from] QueueError),
}

pub type EventsResult<T> = Result<T, EventsError>;

#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends an event; the log lives `ttl` past its last append.
    async fn append(&self, log: &str, key: &str, event: &str, data: &Value, ttl: Duration) -> EventsResult<String>;
    /// Up to `limit` events after `after` (from the start when `None`), oldest first.
    async fn read(&self, log: &str, key: &str, after: Option<&str>, limit: usize) -> EventsResult<Vec<Event>>;
    /// Takes the mark `key`; `true` only for the first caller until it expires.
    async fn mark_once(&self, key: &str, ttl: Duration) -> EventsResult<bool>;
    /// Drops what expired; backends whose entries expire by themselves do nothing.
    async fn remove_expired(&self) -> EventsResult<u64>;
}
