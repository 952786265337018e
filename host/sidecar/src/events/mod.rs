//! Per-key event logs and one-time marks: what the bundle pipeline shares
//! between the worker that makes progress and the components that report it.
//!
//! An event log is an append-only list of `(id, event, data)` per key, read
//! from just after a given id, which is what Server-Sent Events resume with.
//! A mark is taken at most once per key until it expires (one-time links).
//! A mark can also be reserved first and spent later: a download reserves
//! its link's mark before the first byte, gives it back if it fails on our
//! side before any byte went out, and spends it once the body is delivered;
//! while reserved, nobody else can take it.
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

/// The answer to [`EventLog::reserve_mark`], as the API gives it.
pub use orders_vocabulary::api::Reservation;

#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends an event; the log lives `ttl` past its last append.
    async fn append(
        &self,
        log: &str,
        key: &str,
        event: &str,
        data: &Value,
        ttl: Duration,
    ) -> EventsResult<String>;
    /// Up to `limit` events after `after` (from the start when `None`), oldest first.
    async fn read(
        &self,
        log: &str,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> EventsResult<Vec<Event>>;
    /// Takes the mark `key`; `true` only for the first caller until it expires.
    async fn mark_once(&self, key: &str, ttl: Duration) -> EventsResult<bool>;
    /// Reserves the mark `key` for `holder` for `lease` (renewed when the
    /// holder asks again); an expired reservation is free again.
    async fn reserve_mark(
        &self,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> EventsResult<Reservation>;
    /// Turns `holder`'s live reservation into the spent mark, kept for `ttl`;
    /// `false` when `holder` does not hold it (its lease ran out and another
    /// took it, or it never did).
    async fn spend_mark(&self, key: &str, holder: &str, ttl: Duration) -> EventsResult<bool>;
    /// Gives back `holder`'s reservation, unspent; `false` when it held none.
    async fn release_mark(&self, key: &str, holder: &str) -> EventsResult<bool>;
    /// Drops what expired; backends whose entries expire by themselves do nothing.
    async fn remove_expired(&self) -> EventsResult<u64>;
}
