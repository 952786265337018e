//! API keys and the audit trail in the embedded store: their own SQLite file
//! (`auth.sqlite3` beside `orders.sqlite3`), durable like the rest, so
//! `orders keys` can change them while the product runs on the same data
//! directory (SQLite's WAL lets several processes share the file).

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{AuditEntry, KeyRecord, KeyStore, Revoked, parse_scopes};
use crate::durable_sqlite::DurableSqlite;
use crate::store::{StoreError, StoreResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    rate_limit INTEGER,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER,
    revoked_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) WHERE revoked_ms IS NULL;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    operation TEXT NOT NULL,
    target TEXT,
    status INTEGER NOT NULL,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
-- Append-only: the file refuses to change or remove an entry.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
";

const KEY_COLUMNS: &str =
    "id, name, hash, scopes, rate_limit, created_ms, last_used_ms, revoked_ms";

pub struct SqliteKeys {
    db: DurableSqlite,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {error}"))
}

fn key_from_row(row: &Row) -> rusqlite::Result<KeyRecord> {
    let scopes: String = row.get(3)?;
    Ok(KeyRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        hash: row.get(2)?,
        scopes: parse_scopes(scopes.split(',')),
        rate_limit: row.get(4)?,
        created_ms: row.get(5)?,
        last_used_ms: row.get(6)?,
        revoked_ms: row.get(7)?,
    })
}

impl SqliteKeys {
    /// Opens (creating if needed) `data_dir/auth.sqlite3`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            db: DurableSqlite::open(data_dir, "auth.sqlite3", SCHEMA)?,
        })
    }
}

#[async_trait]
impl KeyStore for SqliteKeys {
    async fn create_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let key = key.clone();
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        let scopes = scopes.join(",");
        let inserted = self
            .db
            .run(move |connection| {
                let taken: Option<String> = connection
                    .query_row("SELECT id FROM api_keys WHERE name = ?1 AND revoked_ms IS NULL", [&key.name], |row| row.get(0))
                    .optional()?;
                if taken.is_some() {
                    return Ok(false);
                }
                connection.execute(
                    &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL)"),
                    params![key.id, key.name, key.hash, scopes, key.rate_limit, key.created_ms],
                )?;
                Ok(true)
            })
            .await
            .map_err(|e| unavailable(e.0))?;
        if inserted {
            Ok(())
        } else {
            Err(StoreError::Invalid(
                "an active key already has this name".into(),
            ))
        }
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let hash = hash.to_owned();
        self.db
            .run(move |connection| {
                connection
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"
                    ))?
                    .query_row([hash], key_from_row)
                    .optional()
            })
            .await
            .map_err(|e| unavailable(e.0))
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.db
            .run(|connection| {
                let mut statement = connection.prepare(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms, rowid"
                ))?;
                statement.query_map([], key_from_row)?.collect()
            })
            .await
            .map_err(|e| unavailable(e.0))
    }

    async fn revoke_key(&self, id_or_name: &str, at_ms: i64) -> StoreResult<Revoked> {
        let wanted = id_or_name.to_owned();
        self.db
            .run(move |connection| {
                let transaction = connection.transaction()?;
                let by_id: Option<KeyRecord> = transaction
                    .query_row(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"), [&wanted], key_from_row)
                    .optional()?;
                let target = match by_id {
                    Some(key) => key,
                    None => {
                        let mut statement = transaction
                            .prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE name = ?1 AND revoked_ms IS NULL"))?;
                        let mut named: Vec<KeyRecord> = statement.query_map([&wanted], key_from_row)?.collect::<rusqlite::Result<_>>()?;
                        drop(statement);
                        match named.len() {
                            0 => return Ok(Revoked::NotFound),
                            1 => named.remove(0),
                            _ => return Ok(Revoked::Ambiguous(named.into_iter().map(|k| k.id).collect())),
                        }
                    }
                };
                transaction.execute("UPDATE api_keys SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL", params![target.id, at_ms])?;
                let revoked = transaction.query_row(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"), [&target.id], key_from_row)?;
                transaction.commit()?;
                Ok(Revoked::Done(revoked))
            })
            .await
            .map_err(|e| unavailable(e.0))
    }

    async fn touch_key(&self, id: &str, at_ms: i64) -> StoreResult<()> {
        let id = id.to_owned();
        self.db
            .run(move |connection| {
                connection
                    .execute(
                        "UPDATE api_keys SET last_used_ms = ?2 WHERE id = ?1",
                        params![id, at_ms],
                    )
                    .map(drop)
            })
            .await
            .map_err(|e| unavailable(e.0))
    }

    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.db
            .run(move |connection| {
                // One transaction: one fsync for the whole batch.
                let transaction = connection.transaction()?;
                {
                    let mut insert = transaction.prepare_cached(
                        "INSERT INTO audit (at_ms, actor, operation, target, status, request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for entry in &entries {
                        insert.execute(params![entry.at_ms, entry.actor, entry.operation, entry.target, entry.status, entry.request_id])?;
                    }
                }
                transaction.commit()
            })
            .await
            .map_err(|e| unavailable(e.0))
    }

    async fn audit_since(&self, since_ms: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.db
            .run(move |connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT at_ms, actor, operation, target, status, request_id FROM audit WHERE at_ms >= ?1 ORDER BY at_ms, seq LIMIT ?2",
                )?;
                statement
                    .query_map(params![since_ms, limit], |row| {
                        Ok(AuditEntry {
                            at_ms: row.get(0)?,
                            actor: row.get(1)?,
                            operation: row.get(2)?,
                            target: row.get(3)?,
                            status: row.get(4)?,
                            request_id: row.get(5)?,
                        })
                    })?
                    .collect()
            })
            .await
            .map_err(|e| unavailable(e.0))
    }
}
