//! The embedded event logs and marks: SQLite tables next to the embedded
//! queue, written with `synchronous=FULL`. Expired rows are removed by
//! [`EventLog::remove_expired`], which the sidecar's janitor calls.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{BadEventId, Event, EventLog, EventsResult, Reservation};
use crate::durable_sqlite::{DurableSqlite, now_ms};

pub struct SqliteEvents {
    db: DurableSqlite,
}

impl SqliteEvents {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let db = DurableSqlite::open(
            data_dir,
            "events.sqlite3",
            "CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 log TEXT NOT NULL,
                 key TEXT NOT NULL,
                 event TEXT NOT NULL,
                 data TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS events_by_key ON events (log, key, id);
             CREATE TABLE IF NOT EXISTS event_logs (
                 log TEXT NOT NULL,
                 key TEXT NOT NULL,
                 expires_ms INTEGER NOT NULL,
                 PRIMARY KEY (log, key)
             );
             CREATE TABLE IF NOT EXISTS marks (
                 key TEXT PRIMARY KEY,
                 expires_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS link_marks (
                 key TEXT PRIMARY KEY,
                 holder TEXT NOT NULL,
                 spent INTEGER NOT NULL,
                 expires_ms INTEGER NOT NULL
             );
             -- Marks of the first release were spent when taken.
             INSERT OR IGNORE INTO link_marks (key, holder, spent, expires_ms) SELECT key, '', 1, expires_ms FROM marks;
             DELETE FROM marks;",
        )?;
        Ok(Self { db })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> EventsResult<T> {
        Ok(self.db.run(work).await?)
    }
}

#[async_trait]
impl EventLog for SqliteEvents {
    async fn append(
        &self,
        log: &str,
        key: &str,
        event: &str,
        data: &Value,
        ttl: Duration,
    ) -> EventsResult<String> {
        let (log, key, event, data) = (
            log.to_owned(),
            key.to_owned(),
            event.to_owned(),
            data.to_string(),
        );
        let expires = now_ms() + ttl.as_millis() as i64;
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO events (log, key, event, data) VALUES (?1, ?2, ?3, ?4)",
                params![log, key, event, data],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO event_logs (log, key, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (log, key) DO UPDATE SET expires_ms = excluded.expires_ms",
                params![log, key, expires],
            )?;
            tx.commit()?;
            Ok(id.to_string())
        })
        .await
    }

    async fn read(
        &self,
        log: &str,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> EventsResult<Vec<Event>> {
        let after = match after {
            None => 0,
            Some(id) => id
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| BadEventId(id.to_owned()))?,
        };
        let (log, key) = (log.to_owned(), key.to_owned());
        self.run(move |c| {
            let mut statement =
                c.prepare_cached("SELECT id, event, data FROM events WHERE log = ?1 AND key = ?2 AND id > ?3 ORDER BY id LIMIT ?4")?;
            let rows = statement.query_map(params![log, key, after, limit as i64], |row| {
                let data: String = row.get(2)?;
                Ok(Event { id: row.get::<_, i64>(0)?.to_string(), event: row.get(1)?, data: serde_json::from_str(&data).unwrap_or(Value::Null) })
            })?;
            rows.collect()
        })
        .await
    }

    async fn mark_once(&self, key: &str, ttl: Duration) -> EventsResult<bool> {
        let key = key.to_owned();
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        self.run(move |c| {
            // One statement: an expired mark is taken over, a live one is not.
            let taken = c
                .query_row(
                    "INSERT INTO link_marks (key, holder, spent, expires_ms) VALUES (?1, '', 1, ?2)
                     ON CONFLICT (key) DO UPDATE SET holder = '', spent = 1, expires_ms = excluded.expires_ms
                     WHERE link_marks.expires_ms <= ?3
                     RETURNING key",
                    params![key, expires, now],
                    |_| Ok(()),
                )
                .optional()?;
            Ok(taken.is_some())
        })
        .await
    }

    async fn reserve_mark(
        &self,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> EventsResult<Reservation> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        self.run(move |c| {
            let tx = c.transaction()?;
            let current: Option<(String, bool, i64)> = tx
                .query_row("SELECT holder, spent, expires_ms FROM link_marks WHERE key = ?1", params![key], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            let answer = match current {
                Some((owner, true, expires)) if expires > now => {
                    if owner == holder { Reservation::Granted } else { Reservation::Spent }
                }
                Some((owner, false, expires)) if expires > now && owner != holder => Reservation::Busy,
                _ => {
                    tx.execute(
                        "INSERT INTO link_marks (key, holder, spent, expires_ms) VALUES (?1, ?2, 0, ?3)
                         ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, spent = 0, expires_ms = excluded.expires_ms",
                        params![key, holder, until],
                    )?;
                    Reservation::Granted
                }
            };
            tx.commit()?;
            Ok(answer)
        })
        .await
    }

    async fn spend_mark(&self, key: &str, holder: &str, ttl: Duration) -> EventsResult<bool> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        self.run(move |c| {
            let changed = c.execute(
                "UPDATE link_marks SET spent = 1, expires_ms = ?1 WHERE key = ?2 AND holder = ?3 AND expires_ms > ?4",
                params![expires, key, holder, now],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn release_mark(&self, key: &str, holder: &str) -> EventsResult<bool> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        self.run(move |c| {
            Ok(c.execute(
                "DELETE FROM link_marks WHERE key = ?1 AND holder = ?2 AND spent = 0",
                params![key, holder],
            )? == 1)
        })
        .await
    }

    async fn remove_expired(&self) -> EventsResult<u64> {
        let now = now_ms();
        self.run(move |c| {
            let tx = c.transaction()?;
            let removed = tx.execute(
                "DELETE FROM events WHERE (log, key) IN (SELECT log, key FROM event_logs WHERE expires_ms <= ?1)",
                params![now],
            )?;
            tx.execute("DELETE FROM event_logs WHERE expires_ms <= ?1", params![now])?;
            tx.execute("DELETE FROM link_marks WHERE expires_ms <= ?1", params![now])?;
            tx.commit()?;
            Ok(removed as u64)
        })
        .await
    }
}
