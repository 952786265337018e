//! A SQLite file written durably (WAL, `synchronous=FULL`: an acknowledged
//! write survives `kill -9` and power loss), used from async code by handing
//! each piece of work to the blocking pool. The embedded queue and event
//! logs each keep one.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use crate::queue::QueueError;

pub struct DurableSqlite {
    connection: Arc<Mutex<Connection>>,
}

fn failed(error: impl std::fmt::Display) -> QueueError {
    QueueError(format!("sqlite: {error}"))
}

/// Milliseconds since the Unix epoch: the timestamps these tables keep.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

impl DurableSqlite {
    /// Opens (or creates) `<data_dir>/<file>` and applies `schema`.
    pub fn open(data_dir: &Path, file: &str, schema: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let connection = Connection::open(data_dir.join(file))?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.execute_batch(schema)?;
        Ok(Self { connection: Arc::new(Mutex::new(connection)) })
    }

    /// Runs `work` on the calling thread, for set-up before any async use.
    pub fn run_now<T>(&self, work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let mut connection = self.connection.lock().map_err(|_| failed("lock poisoned"))?;
        Ok(work(&mut connection)?)
    }

    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().map_err(|_| failed("lock poisoned"))?;
            work(&mut connection).map_err(failed)
        })
        .await
        .map_err(failed)?
    }
}
