//! Document storage behind one trait, with two real implementations: the
//! embedded SQLite store (the default) and MongoDB. Both give the same
//! atomic semantics, pinned by the conformance suite in `tests/`:
//!
//! - insert assigns a new ObjectId `_id` and `version = 1`;
//! - insert with an idempotency key creates at most one document per key,
//!   replays the first result for the same fingerprint and reports a
//!   conflict for another, even under concurrent retries;
//! - update sets fields and bumps `version` in one step, optionally only
//!   at an expected version; delete likewise;
//! - a document stored without `version` (the old service never wrote one)
//!   is returned without it and counts as version 1: an update at version 1
//!   applies to it and leaves it at version 2;
//! - import writes a document as given, once per `_id`; backfill rewrites
//!   fields only at the version it was judged at (`orders migrate`).

mod group_commit;
pub mod keys;
pub mod mongo;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// A stored document as JSON: its fields plus `_id` (24 hex) and, unless it
/// was stored before versions existed, `version`. Values JSON lacks (BSON
/// dates, decimals, binary) are Extended JSON, as `mongoexport` writes them.
pub type Doc = Map<String, Value>;

/// The store a sidecar or an offline command works on, as its own type:
/// each has housekeeping of its own beside the documents (keys, expiry).
pub enum OpenedStore {
    Mongo(Arc<mongo::MongoStore>),
    Embedded(Arc<sqlite::SqliteStore>),
}

impl OpenedStore {
    pub fn documents(&self) -> Arc<dyn DocumentStore> {
        match self {
            Self::Mongo(store) => store.clone(),
            Self::Embedded(store) => store.clone(),
        }
    }
}

/// Opens MongoDB when it is configured, else the embedded store in `data_dir`.
pub async fn open(mongo: Option<&mongo::MongoSettings>, data_dir: &Path) -> anyhow::Result<OpenedStore> {
    match mongo {
        Some(settings) => {
            let store = mongo::MongoStore::connect(settings).await?;
            tracing::info!(hosts = store.hosts(), database = %settings.database, "using MongoDB");
            Ok(OpenedStore::Mongo(Arc::new(store)))
        }
        None => {
            let store = sqlite::SqliteStore::open(data_dir)?;
            tracing::info!(dir = %data_dir.display(), "using the embedded SQLite store");
            Ok(OpenedStore::Embedded(Arc::new(store)))
        }
    }
}

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

/// How an imported document met the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Inserted,
    /// A document with that `_id` and the same content was there already.
    Unchanged,
    /// A document with that `_id` and other content is there; it is kept.
    Differs,
}

/// The version a document counts as when it was stored without one.
pub const IMPLICIT_VERSION: i64 = 1;

#[derive(Debug, Clone, thiserror::Error)]
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

/// Durable commits and the writes they carried, where a backend lets writes
/// share a commit (the embedded store's group commit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub writes: u64,
}

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
    /// How many documents the collection holds, whatever their `_id`.
    async fn count(&self, collection: &str) -> StoreResult<u64>;
    /// Writes `doc` (with its `_id`, and `version` if it has one) unless a
    /// document with that `_id` exists: `orders import`, idempotent by `_id`.
    async fn import(&self, collection: &str, doc: Doc) -> StoreResult<ImportOutcome>;
    /// Sets `set` and `version` on the document only while it is still at
    /// `at_version` (`None`: stored without one), so a repair never
    /// overwrites a write that came after it was judged. `false` when the
    /// document changed or is gone.
    async fn backfill(&self, collection: &str, id: &str, at_version: Option<i64>, set: Map<String, Value>, version: i64) -> StoreResult<bool>;
    /// Connections in use and idle, where the backend pools them.
    fn pool_stats(&self) -> Option<(u64, u64)> {
        None
    }
    /// Commits and the writes they carried, where writes share commits.
    fn commit_stats(&self) -> Option<CommitStats> {
        None
    }
}

pub use orders_contract::object_id::is_object_id;

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
pub fn assemble(id: &str, version: Option<i64>, fields: Map<String, Value>) -> Doc {
    let mut doc = Map::with_capacity(fields.len() + 2);
    doc.insert("_id".into(), Value::from(id));
    doc.extend(fields);
    if let Some(version) = version {
        doc.insert("version".into(), Value::from(version));
    }
    doc
}

/// Splits a document to import into its `_id`, its version (when it is a
/// positive integer) and the rest, which is stored as given.
pub fn split_import(mut doc: Doc) -> StoreResult<(String, Option<i64>, Map<String, Value>)> {
    let id = match doc.remove("_id") {
        Some(Value::String(id)) if is_object_id(&id) => id,
        other => return Err(StoreError::Invalid(format!("_id {} is not an ObjectId", other.unwrap_or(Value::Null)))),
    };
    let version = doc.get("version").and_then(Value::as_i64).filter(|version| *version >= 1);
    if version.is_some() {
        doc.remove("version");
    }
    Ok((id, version, doc))
}
