//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`,
//! so a write is on disk before it is acknowledged and survives `kill -9`
//! (see docs/adr/0003-embedded-store-sqlite.md). One writer connection
//! serialises writes, which makes each operation's read-check-write atomic;
//! writes that arrive together share one commit and so one fsync
//! (`group_commit`). Readers use their own connections and never wait on
//! the writer.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::group_commit::GroupCommit;
use super::{
    CommitStats, Doc, DocumentStore, IDEMPOTENCY_RETENTION_SECS, IMPLICIT_VERSION, Idempotency, ImportOutcome, InsertOutcome, StoreError,
    StoreResult, WriteOutcome, assemble, reject_reserved_fields, split_import,
};

/// The `version` column of a document stored without a version (imported
/// from the old service): versions start at 1, so 0 is never a real one.
const NO_VERSION: i64 = 0;

fn version_column(version: Option<i64>) -> i64 {
    version.unwrap_or(NO_VERSION)
}

const READERS: usize = 4;

pub struct SqliteStore {
    writer: GroupCommit,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    in_use: Arc<AtomicUsize>,
}

/// Counts a connection as in use for as long as it lives.
pub(super) struct InUse(Arc<AtomicUsize>);

impl InUse {
    pub(super) fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {error}"))
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(connection)
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64
}

fn new_object_id() -> String {
    bson::oid::ObjectId::new().to_hex()
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir/orders.sqlite3`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", data_dir.display()))?;
        let path = data_dir.join("orders.sqlite3");
        let writer = open(&path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS documents (
                 collection TEXT NOT NULL,
                 id TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 fields TEXT NOT NULL,
                 PRIMARY KEY (collection, id)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS idempotency_keys (
                 collection TEXT NOT NULL,
                 key TEXT NOT NULL,
                 fingerprint TEXT NOT NULL,
                 result TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 PRIMARY KEY (collection, key)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);",
        )?;
        let readers = (0..READERS)
            .map(|_| open(&path).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let in_use = Arc::default();
        let writer = GroupCommit::start(writer, Arc::clone(&in_use))
            .map_err(|e| anyhow::anyhow!("cannot start the writer thread of {}: {e}", path.display()))?;
        Ok(Self { writer, readers: Arc::new(readers), next_reader: AtomicUsize::new(0), in_use })
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % READERS;
        let readers = self.readers.clone();
        let in_use = self.in_use.clone();
        tokio::task::spawn_blocking(move || {
            let connection = readers[index].lock().map_err(|_| unavailable("reader lock poisoned"))?;
            let _in_use = InUse::new(&in_use);
            work(&connection).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    /// Runs `work` inside a transaction shared with the writes queued beside
    /// it; an `Err` rolls back what `work` wrote, an `Ok` is committed
    /// before it is returned.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.writer.write(work).await
    }

    /// Removes idempotency keys older than the retention period.
    pub async fn expire_idempotency_keys(&self) -> StoreResult<usize> {
        self.write(|connection| {
            connection
                .execute("DELETE FROM idempotency_keys WHERE created_at < ?1", params![now_secs() - IDEMPOTENCY_RETENTION_SECS])
                .map_err(unavailable)
        })
        .await
    }
}

fn row_to_doc(id: String, version: i64, fields: String) -> rusqlite::Result<Doc> {
    let fields: Map<String, Value> = serde_json::from_str(&fields)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(assemble(&id, (version != NO_VERSION).then_some(version), fields))
}

/// The document's stored version and fields, for a read-check-write.
fn get_fields(connection: &Connection, collection: &str, id: &str) -> StoreResult<Option<(Option<i64>, Map<String, Value>)>> {
    let row: Option<(i64, String)> = connection
        .prepare_cached("SELECT version, fields FROM documents WHERE collection = ?1 AND id = ?2")
        .and_then(|mut statement| statement.query_row(params![collection, id], |row| Ok((row.get(0)?, row.get(1)?))).optional())
        .map_err(unavailable)?;
    let Some((version, fields)) = row else { return Ok(None) };
    let fields = serde_json::from_str(&fields).map_err(unavailable)?;
    Ok(Some(((version != NO_VERSION).then_some(version), fields)))
}

fn write_fields(connection: &Connection, collection: &str, id: &str, version: i64, fields: &Map<String, Value>) -> StoreResult<()> {
    let fields_text = serde_json::to_string(fields).map_err(unavailable)?;
    connection
        .execute(
            "UPDATE documents SET version = ?3, fields = ?4 WHERE collection = ?1 AND id = ?2",
            params![collection, id, version, fields_text],
        )
        .map_err(unavailable)?;
    Ok(())
}

fn get_doc(connection: &Connection, collection: &str, id: &str) -> rusqlite::Result<Option<Doc>> {
    connection
        .prepare_cached("SELECT id, version, fields FROM documents WHERE collection = ?1 AND id = ?2")?
        .query_row(params![collection, id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?
        .map(|(id, version, fields)| row_to_doc(id, version, fields))
        .transpose()
}

fn current_version(connection: &Connection, collection: &str, id: &str) -> StoreResult<Option<i64>> {
    connection
        .prepare_cached("SELECT version FROM documents WHERE collection = ?1 AND id = ?2")
        .and_then(|mut statement| statement.query_row(params![collection, id], |row| row.get(0)).optional())
        .map_err(unavailable)
}

/// NotFound or VersionMismatch for a write that matched nothing.
fn missed<T>(connection: &Connection, collection: &str, id: &str) -> StoreResult<WriteOutcome<T>> {
    Ok(match current_version(connection, collection, id)? {
        None => WriteOutcome::NotFound,
        Some(_) => WriteOutcome::VersionMismatch,
    })
}

#[async_trait]
impl DocumentStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> Option<(u64, u64)> {
        let total = (READERS + 1) as u64;
        let in_use = (self.in_use.load(Ordering::Relaxed) as u64).min(total);
        Some((in_use, total - in_use))
    }

    fn commit_stats(&self) -> Option<CommitStats> {
        Some(self.writer.stats())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|connection| connection.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn get(&self, collection: &str, id: &str) -> StoreResult<Option<Doc>> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.read(move |connection| get_doc(connection, &collection, &id)).await
    }

    async fn list(&self, collection: &str, after: Option<&str>, limit: u32) -> StoreResult<Vec<Doc>> {
        let collection = collection.to_owned();
        let after = after.unwrap_or("").to_owned();
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, version, fields FROM documents WHERE collection = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = statement.query_map(params![collection, after, limit], |row| {
                row_to_doc(row.get(0)?, row.get(1)?, row.get(2)?)
            })?;
            rows.collect()
        })
        .await
    }

    async fn insert(&self, collection: &str, fields: Map<String, Value>, idempotency: Option<Idempotency>) -> StoreResult<InsertOutcome> {
        reject_reserved_fields(&fields)?;
        let collection = collection.to_owned();
        self.write(move |connection| {
            if let Some(idempotency) = &idempotency {
                let earlier: Option<(String, String)> = connection
                    .query_row(
                        "SELECT fingerprint, result FROM idempotency_keys WHERE collection = ?1 AND key = ?2",
                        params![collection, idempotency.key],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(unavailable)?;
                if let Some((fingerprint, result)) = earlier {
                    if fingerprint != idempotency.fingerprint {
                        return Ok(InsertOutcome::KeyConflict);
                    }
                    let doc: Doc = serde_json::from_str(&result).map_err(unavailable)?;
                    return Ok(InsertOutcome::Replayed(doc));
                }
            }
            let id = new_object_id();
            let fields_text = serde_json::to_string(&fields).map_err(unavailable)?;
            connection
                .execute(
                    "INSERT INTO documents (collection, id, version, fields) VALUES (?1, ?2, 1, ?3)",
                    params![collection, id, fields_text],
                )
                .map_err(unavailable)?;
            let doc = assemble(&id, Some(1), fields);
            if let Some(idempotency) = &idempotency {
                let result = serde_json::to_string(&doc).map_err(unavailable)?;
                connection
                    .execute(
                        "INSERT INTO idempotency_keys (collection, key, fingerprint, result, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![collection, idempotency.key, idempotency.fingerprint, result, now_secs()],
                    )
                    .map_err(unavailable)?;
            }
            Ok(InsertOutcome::Created(doc))
        })
        .await
    }

    async fn update(&self, collection: &str, id: &str, set: Map<String, Value>, if_version: Option<i64>) -> StoreResult<WriteOutcome<Doc>> {
        reject_reserved_fields(&set)?;
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.write(move |connection| {
            let Some((stored_version, mut fields)) = get_fields(connection, &collection, &id)? else {
                return Ok(WriteOutcome::NotFound);
            };
            let version = stored_version.unwrap_or(IMPLICIT_VERSION);
            if if_version.is_some_and(|expected| expected != version) {
                return Ok(WriteOutcome::VersionMismatch);
            }
            fields.extend(set);
            write_fields(connection, &collection, &id, version + 1, &fields)?;
            Ok(WriteOutcome::Done(assemble(&id, Some(version + 1), fields)))
        })
        .await
    }

    async fn delete(&self, collection: &str, id: &str, if_version: Option<i64>) -> StoreResult<WriteOutcome<()>> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.write(move |connection| {
            let deleted = connection
                .execute(
                    "DELETE FROM documents WHERE collection = ?1 AND id = ?2
                     AND (?3 IS NULL OR version = ?3 OR (version = ?4 AND ?3 = ?5))",
                    params![collection, id, if_version, NO_VERSION, IMPLICIT_VERSION],
                )
                .map_err(unavailable)?;
            if deleted == 1 { Ok(WriteOutcome::Done(())) } else { missed(connection, &collection, &id) }
        })
        .await
    }

    async fn count(&self, collection: &str) -> StoreResult<u64> {
        let collection = collection.to_owned();
        self.read(move |connection| {
            connection.query_row("SELECT COUNT(*) FROM documents WHERE collection = ?1", params![collection], |row| row.get(0))
        })
        .await
    }

    async fn import(&self, collection: &str, doc: Doc) -> StoreResult<ImportOutcome> {
        let (id, version, fields) = split_import(doc)?;
        let collection = collection.to_owned();
        self.write(move |connection| {
            let fields_text = serde_json::to_string(&fields).map_err(unavailable)?;
            let inserted = connection
                .execute(
                    "INSERT INTO documents (collection, id, version, fields) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![collection, id, version_column(version), fields_text],
                )
                .map_err(unavailable)?;
            if inserted == 1 {
                return Ok(ImportOutcome::Inserted);
            }
            let existing = get_fields(connection, &collection, &id)?;
            Ok(if existing == Some((version, fields)) { ImportOutcome::Unchanged } else { ImportOutcome::Differs })
        })
        .await
    }

    async fn backfill(&self, collection: &str, id: &str, at_version: Option<i64>, set: Map<String, Value>, version: i64) -> StoreResult<bool> {
        reject_reserved_fields(&set)?;
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.write(move |connection| {
            let Some((stored_version, mut fields)) = get_fields(connection, &collection, &id)? else { return Ok(false) };
            if stored_version != at_version {
                return Ok(false);
            }
            fields.extend(set);
            write_fields(connection, &collection, &id, version, &fields)?;
            Ok(true)
        })
        .await
    }
}
