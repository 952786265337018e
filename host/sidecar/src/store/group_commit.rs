//! Group commit for the embedded store's writes. With `synchronous=FULL`
//! every commit waits for an fsync, so committing each write on its own
//! caps the store at one write per fsync however many callers wait. Here one
//! writer thread owns the writer connection: it takes the first write that
//! arrives, then every write that queued meanwhile (at most `MAX_BATCH`),
//! and commits them in one transaction, one fsync for all of them.
//!
//! - Each write runs in its own savepoint, so a write that fails is rolled
//!   back alone and the others of its batch still commit.
//! - A write is answered only after its batch's COMMIT returned: an
//!   acknowledged write is on disk and survives `kill -9`, as before. When
//!   the batch cannot commit, every write of it is answered `Unavailable`.
//! - Writes still run one at a time on one connection, so each one's
//!   read-check-write stays atomic, and a write sees the writes batched
//!   before it (two inserts with one idempotency key: the second replays).
//! - Nothing waits to gather a batch: writes queue while the previous
//!   commit's fsync runs, so batches grow with load and a lone write is
//!   committed at once.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::sqlite::{InUse, unavailable};
use super::{CommitStats, StoreResult};

/// The most writes one commit carries, so one batch's answers are never
/// held back for long behind a deep queue.
const MAX_BATCH: usize = 256;

/// One write waiting for the writer thread.
trait Job: Send {
    /// Runs the write inside the batch's transaction and keeps its result;
    /// `false` when it failed, so what it wrote is rolled back.
    fn run(&mut self, connection: &Connection) -> bool;
    /// Answers the caller: the kept result once `batch` committed, else
    /// the batch's error.
    fn answer(self: Box<Self>, batch: &StoreResult<()>);
}

struct Write<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(connection);
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn answer(self: Box<Self>, batch: &StoreResult<()>) {
        let answer = match (batch, self.result) {
            (Err(error), _) => Err(error.clone()),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(unavailable("the write panicked")),
        };
        // A caller that stopped waiting (its timeout) has dropped its end.
        let _ = self.reply.send(answer);
    }
}

/// Commits and the writes they carried, counted by the writer thread.
#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
}

/// The writer thread and the queue that feeds it. Dropping this closes the
/// queue; the thread answers what is queued, then ends and closes the
/// connection.
pub struct GroupCommit {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl GroupCommit {
    /// Starts the writer thread on `connection`; `in_use` counts it as a
    /// connection in use while it works on a batch.
    pub fn start(connection: Connection, in_use: Arc<AtomicUsize>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let counters = Arc::<Counters>::default();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let counters = counters.clone();
                move || write_batches(connection, &queue, &in_use, &counters)
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            counters,
        })
    }

    /// Runs `work` in the next batch and answers once that batch is on disk.
    /// An `Err` from `work` rolls back what it wrote; an `Ok` stands.
    pub async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Write {
            work: Some(work),
            result: None,
            reply,
        });
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| unavailable("the writer is closed"))?;
        jobs.send(job)
            .map_err(|_| unavailable("the writer thread has ended"))?;
        answer
            .await
            .map_err(|_| unavailable("the writer thread ended before answering"))?
    }

    /// Commits so far and the writes they carried.
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // The store's files are closed once this returns, so a reopen
            // (or a test removing the directory) finds them free.
            let _ = thread.join();
        }
    }
}

/// The writer thread: blocks for a write, takes what queued behind it,
/// commits them together, answers them; ends when the queue is closed.
fn write_batches(
    mut connection: Connection,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    in_use: &Arc<AtomicUsize>,
    counters: &Counters,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        let committed = {
            let _in_use = InUse::new(in_use);
            commit_batch(&mut connection, &mut batch)
        };
        if committed.is_ok() {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        for job in batch {
            job.answer(&committed);
        }
    }
}

/// Runs each job in its own savepoint of one transaction and commits it.
/// Any failure outside a job's own work fails the whole batch: what is
/// committed must be exactly the jobs that will be told they succeeded.
fn commit_batch(connection: &mut Connection, batch: &mut [Box<dyn Job>]) -> StoreResult<()> {
    // IMMEDIATE takes the write lock before any job runs, so no job meets
    // SQLITE_BUSY half-way through when another process holds the lock.
    let mut transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    for job in batch.iter_mut() {
        let mut savepoint = transaction.savepoint().map_err(unavailable)?;
        // A job that panics is answered as failed; the thread and the
        // other jobs of its batch carry on.
        let succeeded =
            panic::catch_unwind(AssertUnwindSafe(|| job.run(&savepoint))).unwrap_or(false);
        if !succeeded {
            // Undoes this job's writes alone.
            savepoint.rollback().map_err(unavailable)?;
        }
        savepoint.commit().map_err(unavailable)?;
        // Some errors (disk full, I/O) make SQLite roll back the whole
        // transaction; the next savepoint would then start a new one.
        if transaction.is_autocommit() {
            return Err(unavailable("the batch's transaction was rolled back"));
        }
    }
    // On failure the transaction is dropped, which rolls it back.
    transaction.commit().map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;
    use futures::future::{BoxFuture, join_all};
    use rusqlite::{OptionalExtension, params};

    use super::*;
    use crate::store::StoreError;

    fn open(path: &std::path::Path) -> Connection {
        let connection = Connection::open(path).expect("open");
        connection
            .busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        connection
            .pragma_update(None, "synchronous", "FULL")
            .expect("synchronous");
        connection
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        writer: Arc<GroupCommit>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("test.sqlite3");
        let connection = open(&path);
        connection
            .execute_batch(
                "CREATE TABLE items (name TEXT PRIMARY KEY, caller INTEGER NOT NULL);
                 CREATE TABLE parents (id INTEGER PRIMARY KEY);
                 CREATE TABLE children (parent INTEGER NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);
                 PRAGMA foreign_keys = ON;",
            )
            .expect("schema");
        let writer = Arc::new(GroupCommit::start(connection, Arc::default()).expect("start"));
        Fixture {
            _dir: dir,
            path,
            writer,
        }
    }

    impl Fixture {
        /// The names stored, as another connection sees them.
        fn stored(&self) -> Vec<String> {
            let connection = open(&self.path);
            let mut statement = connection
                .prepare("SELECT name FROM items ORDER BY name")
                .expect("prepare");
            statement
                .query_map([], |row| row.get(0))
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows")
        }

        /// Runs `writes` as one batch, whatever the timing: the writer
        /// thread is held in a write of its own while they are queued
        /// (each is polled once, which queues it), then let go.
        async fn batch<T>(
            &self,
            writes: Vec<BoxFuture<'_, StoreResult<T>>>,
        ) -> Vec<StoreResult<T>> {
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (started, running) = oneshot::channel();
            let writer = self.writer.clone();
            let hold = tokio::spawn(async move {
                writer
                    .write(move |_| {
                        let _ = started.send(());
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            });
            running.await.expect("the writer thread runs the hold");
            let mut writes = writes;
            for write in &mut writes {
                assert!(
                    futures::poll!(write).is_pending(),
                    "a write is answered only after its batch commits"
                );
            }
            drop(release);
            let answers = join_all(writes).await;
            hold.await.expect("task").expect("the hold commits alone");
            answers
        }
    }

    fn insert(
        name: &str,
        caller: i64,
    ) -> impl FnOnce(&Connection) -> StoreResult<i64> + Send + 'static {
        let name = name.to_owned();
        move |connection| {
            connection
                .execute(
                    "INSERT INTO items (name, caller) VALUES (?1, ?2)",
                    params![name, caller],
                )
                .map_err(unavailable)?;
            connection
                .query_row(
                    "SELECT caller FROM items WHERE name = ?1",
                    params![name],
                    |row| row.get(0),
                )
                .map_err(unavailable)
        }
    }

    fn item(caller: i64) -> String {
        format!("item-{caller:03}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_acknowledged_and_stored() {
        let store = fixture();
        let tasks: Vec<_> = (0..200)
            .map(|caller| {
                let writer = store.writer.clone();
                tokio::spawn(async move { writer.write(insert(&item(caller), caller)).await })
            })
            .collect();
        for (caller, task) in (0..).zip(tasks) {
            let answer = task.await.expect("task").expect("acknowledged");
            assert_eq!(answer, caller, "each caller gets its own write's result");
        }
        assert_eq!(store.stored(), (0..200).map(item).collect::<Vec<_>>());
        let stats = store.writer.stats();
        assert_eq!(stats.writes, 200);
        assert!(stats.commits <= stats.writes);
    }

    #[tokio::test]
    async fn writes_queued_during_a_commit_share_the_next_one() {
        let store = fixture();
        let writes = (0..200)
            .map(|caller| store.writer.write(insert(&item(caller), caller)).boxed())
            .collect();
        let answers = store.batch(writes).await;
        let answers: Vec<i64> = answers
            .into_iter()
            .map(|answer| answer.expect("acknowledged"))
            .collect();
        assert_eq!(
            answers,
            (0..200).collect::<Vec<_>>(),
            "each caller gets its own write's result"
        );
        assert_eq!(
            store.writer.stats(),
            CommitStats {
                commits: 2,
                writes: 201
            },
            "the hold, then the 200 together"
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_rolled_back_alone_and_its_batch_commits() {
        let store = fixture();
        let writer = &store.writer;
        let refused = |connection: &Connection| -> StoreResult<i64> {
            insert("refused", 1)(connection)?;
            Err(StoreError::Invalid("refused after writing".into()))
        };
        let panicked = |connection: &Connection| -> StoreResult<i64> {
            insert("panicked", 2)(connection)?;
            panic!("a bug in a write");
        };
        let answers = store
            .batch(vec![
                writer.write(insert("before", 0)).boxed(),
                writer.write(refused).boxed(),
                writer.write(panicked).boxed(),
                writer.write(insert("after", 3)).boxed(),
            ])
            .await;
        assert!(matches!(answers[0], Ok(0)), "{:?}", answers[0]);
        assert!(
            matches!(answers[1], Err(StoreError::Invalid(_))),
            "{:?}",
            answers[1]
        );
        assert!(
            matches!(answers[2], Err(StoreError::Unavailable(_))),
            "{:?}",
            answers[2]
        );
        assert!(matches!(answers[3], Ok(3)), "{:?}", answers[3]);
        assert_eq!(store.stored(), ["after", "before"]);
        assert_eq!(
            writer.stats(),
            CommitStats {
                commits: 2,
                writes: 5
            }
        );
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_acknowledges_none_of_its_writes() {
        let store = fixture();
        let writer = &store.writer;
        // A deferred foreign key is checked at COMMIT, which then fails.
        let orphan = |connection: &Connection| -> StoreResult<i64> {
            connection
                .execute("INSERT INTO children (parent) VALUES (42)", [])
                .map_err(unavailable)?;
            Ok(42)
        };
        let answers = store
            .batch(vec![
                writer.write(insert("first", 0)).boxed(),
                writer.write(orphan).boxed(),
                writer.write(insert("last", 2)).boxed(),
            ])
            .await;
        for answer in &answers {
            assert!(
                matches!(answer, Err(StoreError::Unavailable(_))),
                "{answer:?}"
            );
        }
        assert!(store.stored().is_empty());
        assert_eq!(
            writer.stats(),
            CommitStats {
                commits: 1,
                writes: 1
            },
            "only the hold committed"
        );
        // The failed batch was rolled back and the writer goes on.
        assert_eq!(
            writer
                .write(insert("again", 3))
                .await
                .expect("acknowledged"),
            3
        );
        assert_eq!(store.stored(), ["again"]);
    }

    #[tokio::test]
    async fn dropping_the_writer_ends_its_thread_and_closes_the_file() {
        let Fixture { _dir, path, writer } = fixture();
        writer.write(insert("kept", 0)).await.expect("acknowledged");
        // Returns once the thread has ended (the drop joins it).
        drop(Arc::into_inner(writer).expect("the only handle"));
        // The last connection to close checkpoints the WAL and removes it.
        assert!(!path.with_extension("sqlite3-wal").exists());
        let stored: Option<String> = open(&path)
            .query_row("SELECT name FROM items", [], |row| row.get(0))
            .optional()
            .expect("read");
        assert_eq!(stored.as_deref(), Some("kept"));
    }
}
