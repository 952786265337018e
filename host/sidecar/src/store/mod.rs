//! Document storage behind one trait, with two real implementations: the
//! embedded SQLite store (the default) and MongoDB. Both give the same
//! atomic semantics, pinned by the conformance suite in `tests/`:
//!
//! - insert assigns a new ObjectId `_id` and `version = 1`;
//! - insert with an idempotency key creates at most one document per key,
//!   replays the first result for the same fingerprint and reports a
//!   conflict for another, even under concurrent retries;
//! - update sets fields and bumps `version` in one step, optionally only
//!   at an expected version; delete likewise.

pub mod keys;
pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// A stored document as JSON: its fields plus `_id` (24 hex) and `version`.
pub type Doc = Map<String, Value>;

/// How long idempotency keys are kept at least (the contract says 24 h).
pub const IDEMPOTENCY_RETENTION_SECS: i64 = 48 * 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    Created(Doc),
    /// The key was used before with the same fingerprint: its first result.
    Replayed(Doc),
    /// The key was used before with another fingerprint.
    KeyConflict,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome<T> {
    Done(T),
    NotFound,
    VersionMismatch,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot answer now (down, timed out); nothing was applied
    /// that a retry would not complete.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request cannot be applied as given.
    #[error("invalid request: {0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// A short name for logs and metrics (`sqlite`, `mongodb`).
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;
    async fn get(&self, collection: &str, id: &str) -> StoreResult<Option<Doc>>;
    /// Documents with `_id` greater than `after`, in `_id` order.
    async fn list(&self, collection: &str, after: Option<&str>, limit: u32) -> StoreResult<Vec<Doc>>;
    async fn insert(&self, collection: &str, fields: Map<String, Value>, idempotency: Option<Idempotency>) -> StoreResult<InsertOutcome>;
    async fn update(&self, collection: &str, id: &str, set: Map<String, Value>, if_version: Option<i64>) -> StoreResult<WriteOutcome<Doc>>;
    async fn delete(&self, collection: &str, id: &str, if_version: Option<i64>) -> StoreResult<WriteOutcome<()>>;
    /// Connections in use and idle, where the backend pools them.
    fn pool_stats(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Whether `id` is a canonical ObjectId: 24 lowercase hex characters.
pub fn is_object_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Fields a caller may not set: the store owns them.
pub fn reject_reserved_fields(fields: &Map<String, Value>) -> StoreResult<()> {
    for reserved in ["_id", "version"] {
        if fields.contains_key(reserved) {
            return Err(StoreError::Invalid(format!("field {reserved:?} is set by the store")));
        }
    }
    Ok(())
}

/// `fields` with the store-owned `_id` and `version`, `_id` first.
pub fn assemble(id: &str, version: i64, fields: Map<String, Value>) -> Doc {
    let mut doc = Map::with_capacity(fields.len() + 2);
    doc.insert("_id".into(), Value::from(id));
    doc.extend(fields);
    doc.insert("version".into(), Value::from(version));
    doc
}
