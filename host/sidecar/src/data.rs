//! The sidecar's data path: store calls bounded by a timeout and measured,
//! the read-through cache in front of them, and the cache's circuit
//! breaker. When the cache fails, reads go straight to the store for a
//! moment, and before the cache is trusted again it is reset, because
//! invalidations may have been missed meanwhile.
//!
//! Readers that miss the same entry at once share one store read (see
//! [`Flights`]): when a popular page is retired by a write, hundreds of
//! users asking for it would otherwise each send the slow query. An entry
//! past its TTL but still current is served while one reader reads it anew
//! (or when that read fails), so its expiry keeps no reader waiting but one;
//! after a failed re-read the entry is not read again for a pause that
//! doubles with each failure, so a slow store is not sent the same slow
//! query back to back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::cache::{Cache, Entry, EntryKind, Generation, Lookup};
use crate::metrics::{CacheOutcome, SidecarMetrics, StoreMetrics, StoreOperation};
use crate::store::{Doc, DocumentStore, Idempotency, InsertOutcome, StoreError, StoreResult, WriteOutcome};

/// How long a write's task waits for the store after its caller stopped
/// waiting (see [`DataService::write`]): far past any store timeout, short
/// of holding a store connection for good.
const LATE_WRITE_LIMIT: Duration = Duration::from_secs(60);
/// How long reads skip a cache that just failed.
const CACHE_RETRY_AFTER: Duration = Duration::from_millis(500);
/// After a stale entry's re-read failed, how long its copy is served before
/// another reader reads it again; doubled with each failure in a row.
const STALE_REREAD_PAUSE: Duration = Duration::from_secs(1);
const STALE_REREAD_PAUSE_MAX: Duration = Duration::from_secs(30);
/// Entries whose re-read failed, remembered at most; past it the pauses start over.
const PAUSED_ENTRIES: usize = 10_000;

pub struct DataService {
    store: Arc<dyn DocumentStore>,
    cache: Arc<dyn Cache>,
    cache_health: Arc<CacheHealth>,
    flights: Flights,
    metrics: SidecarMetrics,
    store_metrics: StoreMetrics,
    timeout: Duration,
}

#[derive(Default)]
struct Breaker {
    open_until: Option<Instant>,
    needs_reset: bool,
}

/// The cache's circuit breaker, which a write's task trips too when its
/// cache step fails after the caller has gone.
struct CacheHealth {
    breaker: Mutex<Breaker>,
    metrics: SidecarMetrics,
}

impl CacheHealth {
    fn trip(&self, reason: &str) {
        let mut breaker = self.breaker.lock().expect("breaker lock");
        if breaker.open_until.is_none() {
            tracing::warn!(reason, "cache unavailable: serving from the store until it recovers");
        }
        breaker.open_until = Some(Instant::now() + CACHE_RETRY_AFTER);
        breaker.needs_reset = true;
        self.metrics.cache_degraded.set(1);
    }
}

/// An update's or delete's cache step: the document's entry and pages
/// retire when the write was done (not when it was refused or missed).
fn invalidate_when_done<T>(id: &str) -> impl FnOnce(&WriteOutcome<T>) -> Option<CacheStep> + Send + 'static {
    let id = id.to_owned();
    move |outcome| matches!(outcome, WriteOutcome::Done(_)).then_some(CacheStep::Invalidate(id))
}

/// What a write that changed the store does to the cache.
enum CacheStep {
    /// A new document with this id: the collection's last pages retire.
    Inserted(String),
    /// This document changed or is gone: its entry and every page retire.
    Invalidate(String),
    /// An insert whose outcome is unknown: every page retires.
    RetirePages,
}

impl DataService {
    pub fn new(store: Arc<dyn DocumentStore>, cache: Arc<dyn Cache>, metrics: SidecarMetrics, timeout: Duration) -> Self {
        let store_metrics = metrics.store(store.backend());
        let cache_health = Arc::new(CacheHealth { breaker: Mutex::default(), metrics: metrics.clone() });
        Self { store, cache, cache_health, flights: Flights::default(), metrics, store_metrics, timeout }
    }

    pub fn store(&self) -> &Arc<dyn DocumentStore> {
        &self.store
    }

    pub fn cache_backend(&self) -> &'static str {
        self.cache.backend()
    }

    /// Runs one store operation within the timeout, recording it.
    async fn timed<T>(&self, operation: StoreOperation, work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("{} took longer than {:?}", operation.label(), self.timeout))),
        };
        let failed = matches!(result, Err(StoreError::Unavailable(_)));
        self.store_metrics.observe(operation, started.elapsed(), failed);
        result
    }

    pub async fn ping(&self) -> StoreResult<()> {
        self.timed(StoreOperation::Ping, self.store.ping()).await
    }

    /// `{"doc": …}` for one document, from the cache when it has it.
    pub async fn get_body(&self, collection: &str, id: &str) -> StoreResult<Option<String>> {
        self.read_through(collection, EntryKind::Doc, id, async {
            let doc = self.timed(StoreOperation::Get, self.store.get(collection, id)).await?;
            Ok(doc.map(|doc| (Entry::Doc, json!({ "doc": doc }).to_string())))
        })
        .await
    }

    /// `{"docs": […]}` for one page.
    pub async fn list_body(&self, collection: &str, after: Option<&str>, limit: u32) -> StoreResult<String> {
        let page_key = format!("{}:{limit}", after.unwrap_or(""));
        let body = self
            .read_through(collection, EntryKind::Page, &page_key, async {
                let docs = self.timed(StoreOperation::List, self.store.list(collection, after, limit)).await?;
                let ids: Vec<&str> = docs.iter().map(doc_id).collect();
                Ok(Some((Entry::page(&ids, after, limit), json!({ "docs": docs }).to_string())))
            })
            .await?;
        Ok(body.unwrap_or_else(|| json!({ "docs": [] }).to_string()))
    }

    pub async fn insert(&self, collection: &str, fields: Map<String, Value>, idempotency: Option<Idempotency>) -> StoreResult<InsertOutcome> {
        let (store, name) = (self.store.clone(), collection.to_owned());
        let write = async move { store.insert(&name, fields, idempotency).await };
        self.write(StoreOperation::Insert, collection, write, CacheStep::RetirePages, |outcome| match outcome {
            InsertOutcome::Created(doc) => Some(CacheStep::Inserted(doc_id(doc).to_owned())),
            _ => None,
        })
        .await
    }

    pub async fn update(&self, collection: &str, id: &str, set: Map<String, Value>, if_version: Option<i64>) -> StoreResult<WriteOutcome<Doc>> {
        let (store, name, owned_id) = (self.store.clone(), collection.to_owned(), id.to_owned());
        let write = async move { store.update(&name, &owned_id, set, if_version).await };
        self.write(StoreOperation::Update, collection, write, CacheStep::Invalidate(id.to_owned()), invalidate_when_done(id)).await
    }

    pub async fn delete(&self, collection: &str, id: &str, if_version: Option<i64>) -> StoreResult<WriteOutcome<()>> {
        let (store, name, owned_id) = (self.store.clone(), collection.to_owned(), id.to_owned());
        let write = async move { store.delete(&name, &owned_id, if_version).await };
        self.write(StoreOperation::Delete, collection, write, CacheStep::Invalidate(id.to_owned()), invalidate_when_done(id)).await
    }

    /// Runs a write's store call, then the cache step its outcome calls for,
    /// on a task of its own, and waits for them within the store timeout.
    /// A store may apply a write after its caller stopped waiting (that
    /// timeout, the request cut off by its client or its deadline): the
    /// cache step must follow the store's answer, not the caller's patience,
    /// or the cache would keep serving the old copy of what the store changed
    /// until its TTL ran out. A write still unanswered after
    /// [`LATE_WRITE_LIMIT`] is abandoned (its store call dropped, so a store
    /// that never answers holds no task or connection for good), and, its
    /// outcome unknown, takes the `unknown` step.
    async fn write<T: Send + 'static>(
        &self,
        operation: StoreOperation,
        collection: &str,
        write: impl Future<Output = StoreResult<T>> + Send + 'static,
        unknown: CacheStep,
        cache_step: impl FnOnce(&T) -> Option<CacheStep> + Send + 'static,
    ) -> StoreResult<T> {
        let (cache, health, collection) = (self.cache.clone(), self.cache_health.clone(), collection.to_owned());
        let task = tokio::spawn(async move {
            let (step, result) = match tokio::time::timeout(LATE_WRITE_LIMIT, write).await {
                Ok(Ok(outcome)) => (cache_step(&outcome), Ok(outcome)),
                Ok(Err(error)) => (None, Err(error)),
                Err(_) => {
                    tracing::warn!(collection, operation = operation.label(), "a write still unanswered after {LATE_WRITE_LIMIT:?}: abandoned, what the cache holds of it retired");
                    (Some(unknown), Err(StoreError::Unavailable(format!("{} unanswered", operation.label()))))
                }
            };
            let stepped = match &step {
                None => Ok(()),
                Some(CacheStep::Inserted(id)) => cache.inserted(&collection, id).await,
                Some(CacheStep::Invalidate(id)) => cache.invalidate(&collection, id).await,
                // A new generation retires every page; no document has the empty id.
                Some(CacheStep::RetirePages) => cache.invalidate(&collection, "").await,
            };
            if let Err(error) = stepped {
                // The write stands, but the cache missed it: not to be trusted until reset.
                health.trip(&error.to_string());
            }
            result
        });
        self.timed(operation, async {
            task.await.unwrap_or_else(|failed| Err(StoreError::Unavailable(format!("the write's task failed: {failed}"))))
        })
        .await
    }

    async fn read_through(
        &self,
        collection: &str,
        kind: EntryKind,
        key: &str,
        load: impl Future<Output = StoreResult<Option<(Entry, String)>>>,
    ) -> StoreResult<Option<String>> {
        let value = |loaded: Option<(Entry, String)>| loaded.map(|(_, value)| value);
        // Looks again only when the reader it followed gave up (its request
        // cancelled): then this one may lead, and its read fills the cache.
        let (generation, stale, leading, tell) = loop {
            if !self.cache_usable().await {
                self.metrics.cache(CacheOutcome::Bypass);
                return load.await.map(value);
            }
            let Lookup { value: found, stale: expired, generation } = match self.cache.lookup(collection, kind, key).await {
                Ok(lookup) => lookup,
                Err(error) => {
                    self.trip(&error.to_string());
                    self.metrics.cache(CacheOutcome::Error);
                    return load.await.map(value);
                }
            };
            let stale = match found {
                Some(value) if !expired => {
                    self.metrics.cache(CacheOutcome::Hit);
                    return Ok(Some(value));
                }
                stale => stale,
            };
            self.metrics.cache(if stale.is_some() { CacheOutcome::Stale } else { CacheOutcome::Miss });
            let flight = (collection.to_owned(), kind, key.to_owned());
            match self.flights.join_or_lead(flight, &generation, stale.is_some()) {
                // Another reader is reading it anew, or a re-read failed a
                // moment ago: this lookup found the copy current, so serve it.
                Flight::ServeStale => return Ok(stale),
                Flight::Follow(answer) => match Flights::wait(answer).await {
                    Some(answer) => return answer,
                    None => continue,
                },
                Flight::Lead(leading, tell) => break (generation, stale, leading, tell),
            }
        };
        let loaded = load.await;
        if let Ok(Some((entry, value))) = &loaded
            && let Err(error) = self.cache.fill(collection, entry, key, &generation, value).await
        {
            self.trip(&error.to_string());
        }
        let answer = match (loaded.map(value), stale) {
            // A store that fails is no reason to refuse a copy still current.
            (Err(error), Some(stale)) => {
                let pause = leading.pause_rereads();
                tracing::warn!(%error, collection, ?pause, "reading a stale cache entry anew failed: serving it meanwhile");
                Ok(Some(stale))
            }
            (answer, stale) => {
                if stale.is_some() {
                    leading.end_pause();
                }
                answer
            }
        };
        let _ = tell.send(Some(answer.clone()));
        answer
    }

    fn trip(&self, reason: &str) {
        self.cache_health.trip(reason);
    }

    /// Whether reads may use the cache now; resets it first after a failure.
    async fn cache_usable(&self) -> bool {
        {
            let breaker = self.cache_health.breaker.lock().expect("breaker lock");
            if !breaker.needs_reset {
                return true;
            }
            if breaker.open_until.is_some_and(|until| Instant::now() < until) {
                return false;
            }
        }
        match self.cache.reset().await {
            Ok(()) => {
                let mut breaker = self.cache_health.breaker.lock().expect("breaker lock");
                *breaker = Breaker::default();
                self.metrics.cache_degraded.set(0);
                tracing::info!("cache reachable again; reset and back in use");
                true
            }
            Err(error) => {
                self.trip(&error.to_string());
                false
            }
        }
    }
}

/// A missed entry, by collection, kind and key.
type FlightKey = (String, EntryKind, String);
type Answer = Option<StoreResult<Option<String>>>;

/// The store reads of missed entries in flight. A reader that misses an
/// entry already being read waits for that read's answer instead — but only
/// when both lookups saw the same cache counters. A write moves them before
/// it is acknowledged, so then no write acknowledged before this reader
/// began had moved them after the other read's lookup: its store write was
/// done before that read, which therefore holds it. (A read after a write
/// still never sees the old value.) A reader that found a stale copy waits
/// for nothing: its own lookup found the copy current, whatever the counters.
#[derive(Default)]
struct Flights {
    table: Mutex<FlightTable>,
}

#[derive(Default)]
struct FlightTable {
    loading: HashMap<FlightKey, (Generation, watch::Receiver<Answer>)>,
    /// Stale entries whose re-read failed, and until when they are not read again.
    paused: HashMap<FlightKey, Pause>,
}

struct Pause {
    until: Instant,
    failures: u32,
}

/// Takes a flight off the list when its reader is done or gives up (its
/// request cancelled), unless a newer flight of the same entry replaced it.
struct Leading<'a> {
    flights: &'a Flights,
    key: FlightKey,
    answer: watch::Receiver<Answer>,
}

impl Leading<'_> {
    /// After this reader's re-read of a stale entry failed: its copy is
    /// served without another re-read for a pause, longer after each failure.
    fn pause_rereads(&self) -> Duration {
        let mut table = self.flights.table.lock().expect("flights lock");
        if table.paused.len() >= PAUSED_ENTRIES && !table.paused.contains_key(&self.key) {
            table.paused.clear();
        }
        let pause = table.paused.entry(self.key.clone()).or_insert(Pause { until: Instant::now(), failures: 0 });
        let length = STALE_REREAD_PAUSE.saturating_mul(1 << pause.failures.min(16)).min(STALE_REREAD_PAUSE_MAX);
        pause.failures += 1;
        pause.until = Instant::now() + length;
        length
    }

    /// After this reader's re-read of a stale entry worked: no more pauses.
    fn end_pause(&self) {
        self.flights.table.lock().expect("flights lock").paused.remove(&self.key);
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut table = self.flights.table.lock().expect("flights lock");
        if table.loading.get(&self.key).is_some_and(|(_, answer)| answer.same_channel(&self.answer)) {
            table.loading.remove(&self.key);
        }
    }
}

enum Flight<'a> {
    /// The reader holds a stale copy and need not read it anew now.
    ServeStale,
    /// Another reader is reading this entry under the same counters.
    Follow(watch::Receiver<Answer>),
    /// This reader reads it, and tells those who follow.
    Lead(Leading<'a>, watch::Sender<Answer>),
}

impl Flights {
    /// For a reader holding a stale copy: serve it while the entry is being
    /// read or its re-reads are paused. Otherwise follows a read of `key` in
    /// flight under the same counters, or else registers this reader's own
    /// (in one step, so two readers missing at once cannot both lead).
    fn join_or_lead(&self, key: FlightKey, seen: &Generation, stale: bool) -> Flight<'_> {
        let mut table = self.table.lock().expect("flights lock");
        if stale
            && (table.loading.contains_key(&key) || table.paused.get(&key).is_some_and(|pause| Instant::now() < pause.until))
        {
            return Flight::ServeStale;
        }
        if let Some((generation, answer)) = table.loading.get(&key)
            && generation == seen
        {
            return Flight::Follow(answer.clone());
        }
        let (tell, answer) = watch::channel(None);
        table.loading.insert(key.clone(), (seen.clone(), answer.clone()));
        Flight::Lead(Leading { flights: self, key, answer }, tell)
    }

    /// The followed read's answer; `None` if its reader gave up first.
    async fn wait(mut answer: watch::Receiver<Answer>) -> Option<StoreResult<Option<String>>> {
        let answered = answer.wait_for(Option::is_some).await.ok()?;
        answered.clone()
    }
}

pub(crate) fn doc_id(doc: &Doc) -> &str {
    doc.get("_id").and_then(Value::as_str).unwrap_or_default()
}
