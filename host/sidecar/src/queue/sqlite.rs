//! The embedded job queue: a SQLite table in the sidecar's data directory,
//! written with `synchronous=FULL` like the document store, so an appended
//! job survives `kill -9`. A claim is one UPDATE … RETURNING, atomic under
//! SQLite's single writer, so two consumers never get the same job.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, params};
use serde_json::Value;

use super::{AppendLimits, AppendOutcome, Job, JobQueue, QueueResult};
use crate::durable_sqlite::{DurableSqlite, now_ms};

pub struct SqliteQueue {
    db: DurableSqlite,
}

impl SqliteQueue {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let db = DurableSqlite::open(
            data_dir,
            "queue.sqlite3",
            "CREATE TABLE IF NOT EXISTS jobs (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 stream TEXT NOT NULL,
                 payload TEXT NOT NULL,
                 consumer TEXT,
                 claimed_at INTEGER,
                 deliveries INTEGER NOT NULL DEFAULT 0
             );
             CREATE INDEX IF NOT EXISTS jobs_stream ON jobs (stream, id);",
        )?;
        // Added after the first release: the key a job counts against.
        db.run_now(|c| {
            let has_key: bool = c.prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'limit_key'")?.exists([])?;
            if !has_key {
                c.execute_batch("ALTER TABLE jobs ADD COLUMN limit_key TEXT; CREATE INDEX IF NOT EXISTS jobs_limit_key ON jobs (stream, limit_key);")?;
            }
            Ok(())
        })?;
        Ok(Self { db })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> QueueResult<T> {
        self.db.run(move |c| work(c)).await
    }
}

#[async_trait]
impl JobQueue for SqliteQueue {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn append(&self, stream: &str, payload: &Value) -> QueueResult<String> {
        let (stream, payload) = (stream.to_owned(), payload.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT INTO jobs (stream, payload) VALUES (?1, ?2)",
                params![stream, payload],
            )?;
            Ok(c.last_insert_rowid().to_string())
        })
        .await
    }

    async fn append_within(
        &self,
        stream: &str,
        payload: &Value,
        limits: &AppendLimits<'_>,
    ) -> QueueResult<AppendOutcome> {
        let (stream, payload, max_queued) =
            (stream.to_owned(), payload.to_string(), limits.max_queued);
        let per_key = limits.per_key.map(|(key, max)| (key.to_owned(), max));
        self.run(move |c| {
            // One connection behind a mutex: the counts and the insert are
            // one step for every caller of this process; the transaction
            // makes them one for other processes on the same file too.
            let tx = c.unchecked_transaction()?;
            let queued: i64 = tx.query_row(
                "SELECT COUNT(*) FROM jobs WHERE stream = ?1",
                params![stream],
                |row| row.get(0),
            )?;
            if queued as u64 >= max_queued {
                return Ok(AppendOutcome::StreamFull);
            }
            if let Some((key, max)) = &per_key {
                let held: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM jobs WHERE stream = ?1 AND limit_key = ?2",
                    params![stream, key],
                    |row| row.get(0),
                )?;
                if held as u64 >= *max {
                    return Ok(AppendOutcome::KeyFull);
                }
            }
            let key = per_key.map(|(key, _)| key);
            tx.execute(
                "INSERT INTO jobs (stream, payload, limit_key) VALUES (?1, ?2, ?3)",
                params![stream, payload, key],
            )?;
            let id = tx.last_insert_rowid().to_string();
            tx.commit()?;
            Ok(AppendOutcome::Added(id))
        })
        .await
    }

    async fn claim(
        &self,
        stream: &str,
        consumer: &str,
        count: usize,
        min_idle_ms: u64,
    ) -> QueueResult<Vec<Job>> {
        let (stream, consumer) = (stream.to_owned(), consumer.to_owned());
        self.run(move |c| {
            let now = now_ms();
            let mut statement = c.prepare_cached(
                "UPDATE jobs SET consumer = ?1, claimed_at = ?2, deliveries = deliveries + 1
                 WHERE id IN (SELECT id FROM jobs WHERE stream = ?3 AND (claimed_at IS NULL OR claimed_at <= ?4)
                              ORDER BY id LIMIT ?5)
                 RETURNING id, payload, deliveries",
            )?;
            let rows = statement.query_map(params![consumer, now, stream, now - min_idle_ms as i64, count as i64], |row| {
                let payload: String = row.get(1)?;
                Ok(Job {
                    id: row.get::<_, i64>(0)?.to_string(),
                    payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                    deliveries: row.get::<_, i64>(2)? as u64,
                })
            })?;
            let mut jobs: Vec<Job> = rows.collect::<rusqlite::Result<_>>()?;
            jobs.sort_by_key(|job| job.id.parse::<i64>().unwrap_or(0));
            Ok(jobs)
        })
        .await
    }

    async fn touch(&self, stream: &str, consumer: &str, job: &Job) -> QueueResult<bool> {
        let (stream, consumer) = (stream.to_owned(), consumer.to_owned());
        let Ok(id) = job.id.parse::<i64>() else {
            return Ok(false);
        };
        let deliveries = job.deliveries as i64;
        self.run(move |c| {
            let renewed = c.execute(
                "UPDATE jobs SET claimed_at = ?1 WHERE stream = ?2 AND id = ?3 AND consumer = ?4 AND deliveries = ?5",
                params![now_ms(), stream, id, consumer, deliveries],
            )?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn ack(&self, stream: &str, ids: &[String]) -> QueueResult<u64> {
        let stream = stream.to_owned();
        let ids: Vec<i64> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        self.run(move |c| {
            let mut removed = 0;
            for id in ids {
                removed += c.execute(
                    "DELETE FROM jobs WHERE stream = ?1 AND id = ?2",
                    params![stream, id],
                )? as u64;
            }
            Ok(removed)
        })
        .await
    }

    async fn depth(&self, stream: &str) -> QueueResult<u64> {
        let stream = stream.to_owned();
        self.run(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE stream = ?1",
                params![stream],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
        .await
    }
}
