//! Records accepted writes in the audit trail, several per commit.
//!
//! Every accepted write waits for its audit entry to be stored before it is
//! answered. Appending each entry on its own cost one durable commit per
//! write (an fsync in SQLite, a journaled majority write in MongoDB) on top
//! of the write's own, and the embedded file's single connection took them
//! one at a time: under load, writes queued for the audit trail longer than
//! for the store. Here one task appends: it takes the first entry that
//! arrives, then every entry that queued meanwhile (at most `MAX_BATCH`),
//! and stores them in one call. Nothing waits to gather a batch, so a lone
//! write is recorded at once and batches grow with load.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreResult;
use crate::store::keys::{AuditEntry, KeyStore};

/// The most entries one append carries.
const MAX_BATCH: usize = 256;
/// Entries waiting beyond the batch being stored; past it, writers wait to queue.
const QUEUE: usize = 4 * MAX_BATCH;

type Pending = (AuditEntry, oneshot::Sender<StoreResult<()>>);

#[derive(Clone)]
pub struct AuditTrail {
    queue: mpsc::Sender<Pending>,
}

impl AuditTrail {
    /// Starts the appending task (on the current Tokio runtime); it ends
    /// when the last handle is dropped.
    pub fn start(keys: Arc<dyn KeyStore>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(append_in_batches(keys, receiver));
        Self { queue }
    }

    /// Stores `entry`; answers once it is committed, or with the store's error.
    pub async fn record(&self, entry: AuditEntry) -> StoreResult<()> {
        let (answer, answered) = oneshot::channel();
        self.queue.send((entry, answer)).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> crate::store::StoreError {
    crate::store::StoreError::Unavailable("the audit trail's writer stopped".into())
}

async fn append_in_batches(keys: Arc<dyn KeyStore>, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (entries, answers): (Vec<AuditEntry>, Vec<_>) = batch.drain(..).unzip();
        let stored = keys.append_audit(&entries).await;
        for answer in answers {
            // A caller that stopped waiting has dropped its end.
            let _ = answer.send(stored.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::store::keys::sqlite::SqliteKeys;
    use crate::store::keys::{KeyRecord, Revoked};

    /// The embedded key store, noting the size of each append it is asked for.
    struct Counted {
        store: SqliteKeys,
        appends: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl KeyStore for Counted {
        async fn create_key(&self, key: &KeyRecord) -> StoreResult<()> {
            self.store.create_key(key).await
        }
        async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
            self.store.key_by_hash(hash).await
        }
        async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
            self.store.list_keys().await
        }
        async fn revoke_key(&self, id_or_name: &str, at_ms: i64) -> StoreResult<Revoked> {
            self.store.revoke_key(id_or_name, at_ms).await
        }
        async fn touch_key(&self, id: &str, at_ms: i64) -> StoreResult<()> {
            self.store.touch_key(id, at_ms).await
        }
        async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
            self.appends.lock().expect("lock").push(entries.len());
            self.store.append_audit(entries).await
        }
        async fn audit_since(&self, since_ms: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
            self.store.audit_since(since_ms, limit).await
        }
    }

    fn entry(target: usize) -> AuditEntry {
        AuditEntry {
            at_ms: 1,
            actor: "key:k".into(),
            operation: "order.create".into(),
            target: Some(format!("{target:03}")),
            status: 201,
            request_id: None,
        }
    }

    /// On one thread the appending task runs only when the test yields, so
    /// the lone entry is stored alone and the 300 queued together share commits.
    #[tokio::test]
    async fn concurrent_writes_share_commits_and_every_entry_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Arc::new(Counted { store: SqliteKeys::open(dir.path()).expect("open"), appends: Mutex::default() });
        let trail = AuditTrail::start(keys.clone());
        trail.record(entry(0)).await.expect("a lone entry is recorded at once");
        let recorded = futures::future::join_all((1..=300).map(|target| trail.record(entry(target)))).await;
        assert!(recorded.iter().all(Result::is_ok), "{recorded:?}");
        let mut stored: Vec<String> =
            keys.audit_since(0, 1000).await.expect("read").into_iter().filter_map(|entry| entry.target).collect();
        stored.sort();
        assert_eq!(stored, (0..=300).map(|target| format!("{target:03}")).collect::<Vec<_>>());
        // Tokio makes a task yield after 128 sends or so, so the 300 queue in
        // a few steps; each step's entries share one commit.
        let appends = keys.appends.lock().expect("lock").clone();
        assert_eq!((appends[0], appends.iter().sum::<usize>()), (1, 301), "{appends:?}");
        assert!(appends.len() <= 4 && appends.iter().all(|&size| size <= MAX_BATCH), "{appends:?}");
    }

    #[tokio::test]
    async fn a_failed_append_is_reported_to_each_of_its_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Arc::new(Counted { store: SqliteKeys::open(dir.path()).expect("open"), appends: Mutex::default() });
        let trail = AuditTrail::start(keys.clone());
        // The trail is append-only; a table that refuses inserts stands in
        // for a store that cannot commit.
        rusqlite::Connection::open(dir.path().join("auth.sqlite3"))
            .and_then(|db| db.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'refused'); END;"))
            .expect("add the trigger");
        let recorded = futures::future::join_all((0..3).map(|target| trail.record(entry(target)))).await;
        assert!(recorded.iter().all(|result| matches!(result, Err(crate::store::StoreError::Unavailable(_)))), "{recorded:?}");
        assert_eq!(*keys.appends.lock().expect("lock"), [3]);
    }
}
