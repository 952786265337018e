//! The read-through cache's promises, on both caches (in-process and
//! Redis) in front of the embedded store, through the sidecar's data path:
//! a read after a write never sees the old value, and list pages that an
//! insert cannot change stay cached through it (an insert only changes the
//! collection's last page, since new orders get larger ids).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use orders_sidecar::cache::memory::MemoryCache;
use orders_sidecar::cache::redis::RedisCache;
use orders_sidecar::cache::{Cache, Entry, EntryKind, kept_for};
use orders_sidecar::data::DataService;
use orders_sidecar::metrics::SidecarMetrics;
use orders_sidecar::store::sqlite::SqliteStore;
use orders_sidecar::store::{Doc, DocumentStore, Idempotency, ImportOutcome, InsertOutcome, StoreError, StoreResult, WriteOutcome};
use orders_telemetry::Registry;
use orders_testkit::services::RedisServer;
use serde_json::{Map, Value, json};

const ORDERS: &str = "orders";
const PAGE: u32 = 10;

struct Service {
    data: Arc<DataService>,
    cache: Arc<dyn Cache>,
    _dir: tempfile::TempDir,
}

fn service(cache: Arc<dyn Cache>) -> Service {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DocumentStore> = Arc::new(SqliteStore::open(dir.path()).expect("open the store"));
    let metrics = SidecarMetrics::new(Registry::default());
    Service { data: Arc::new(DataService::new(store, cache.clone(), metrics, Duration::from_secs(5))), cache, _dir: dir }
}

/// The embedded store, able to hold the result of one list read until
/// released (after the read itself, so what it holds may turn stale) or to
/// fail one, counting list reads, and able to apply writes late. Everything
/// else passes straight through.
struct GatedStore {
    inner: Arc<dyn DocumentStore>,
    lists: AtomicUsize,
    hold_next: AtomicBool,
    fail_next: AtomicBool,
    held: Notify,
    release: Notify,
    /// Writes wait this long first, and then are applied whether or not
    /// their caller still waits, as a database applies a write its client
    /// gave up on.
    late_writes: std::sync::Mutex<Option<Duration>>,
}

impl GatedStore {
    fn new(inner: Arc<dyn DocumentStore>) -> Self {
        let (hold_next, fail_next) = (AtomicBool::new(false), AtomicBool::new(false));
        let late_writes = std::sync::Mutex::new(None);
        Self { inner, lists: AtomicUsize::new(0), hold_next, fail_next, held: Notify::new(), release: Notify::new(), late_writes }
    }

    /// A data path over this store, on `service`'s cache.
    fn data(self: &Arc<Self>, service: &Service) -> Arc<DataService> {
        self.data_with_timeout(service, Duration::from_secs(5))
    }

    fn data_with_timeout(self: &Arc<Self>, service: &Service, store_timeout: Duration) -> Arc<DataService> {
        let metrics = SidecarMetrics::new(Registry::default());
        Arc::new(DataService::new(self.clone(), service.cache.clone(), metrics, store_timeout))
    }

    /// Runs `write` on the inner store, late if writes are.
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(Arc<dyn DocumentStore>) -> futures::future::BoxFuture<'static, StoreResult<T>>,
    ) -> StoreResult<T> {
        let late = *self.late_writes.lock().expect("lock");
        let applied = write(self.inner.clone());
        match late {
            None => applied.await,
            Some(delay) => tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                applied.await
            })
            .await
            .expect("the late write"),
        }
    }
}

#[async_trait]
impl DocumentStore for GatedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn get(&self, collection: &str, id: &str) -> StoreResult<Option<Doc>> {
        self.inner.get(collection, id).await
    }
    async fn list(&self, collection: &str, after: Option<&str>, limit: u32) -> StoreResult<Vec<Doc>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("failed on purpose".into()));
        }
        let docs = self.inner.list(collection, after, limit).await?;
        if self.hold_next.swap(false, Ordering::SeqCst) {
            self.held.notify_one();
            self.release.notified().await;
        }
        Ok(docs)
    }
    async fn insert(&self, collection: &str, fields: Map<String, Value>, idempotency: Option<Idempotency>) -> StoreResult<InsertOutcome> {
        let collection = collection.to_owned();
        self.write(|inner| Box::pin(async move { inner.insert(&collection, fields, idempotency).await })).await
    }
    async fn update(&self, collection: &str, id: &str, set: Map<String, Value>, if_version: Option<i64>) -> StoreResult<WriteOutcome<Doc>> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.write(|inner| Box::pin(async move { inner.update(&collection, &id, set, if_version).await })).await
    }
    async fn delete(&self, collection: &str, id: &str, if_version: Option<i64>) -> StoreResult<WriteOutcome<()>> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.write(|inner| Box::pin(async move { inner.delete(&collection, &id, if_version).await })).await
    }
    async fn count(&self, collection: &str) -> StoreResult<u64> {
        self.inner.count(collection).await
    }
    async fn import(&self, collection: &str, doc: Doc) -> StoreResult<ImportOutcome> {
        self.inner.import(collection, doc).await
    }
    async fn backfill(&self, collection: &str, id: &str, at_version: Option<i64>, set: Map<String, Value>, version: i64) -> StoreResult<bool> {
        self.inner.backfill(collection, id, at_version, set, version).await
    }
}

/// A gated store over `service`'s, holding 25 orders, and a data path over it.
async fn gated_with_orders(service: &Service) -> (Arc<GatedStore>, Arc<DataService>) {
    let gated = Arc::new(GatedStore::new(service.data.store().clone()));
    let data = gated.data(service);
    for quantity in 0..25 {
        insert(&data, quantity).await;
    }
    (gated, data)
}

fn order(quantity: i64) -> Map<String, Value> {
    json!({ "product": "Banner", "quantity": quantity }).as_object().cloned().expect("an object")
}

async fn insert(data: &DataService, quantity: i64) -> String {
    match data.insert(ORDERS, order(quantity), None).await.expect("insert") {
        InsertOutcome::Created(doc) => doc["_id"].as_str().expect("an id").to_owned(),
        other => panic!("not created: {other:?}"),
    }
}

/// One page as the data path answers it: the ids and quantities.
async fn page(data: &DataService, after: Option<&str>) -> Vec<(String, i64)> {
    let body: Value = serde_json::from_str(&data.list_body(ORDERS, after, PAGE).await.expect("list")).expect("JSON");
    body["docs"]
        .as_array()
        .expect("docs")
        .iter()
        .map(|doc| (doc["_id"].as_str().expect("id").to_owned(), doc["quantity"].as_i64().expect("quantity")))
        .collect()
}

/// Every page in turn, as the data path answers them.
async fn all_pages(data: &DataService) -> Vec<Vec<(String, i64)>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let this = page(data, after.as_deref()).await;
        let full = this.len() == PAGE as usize;
        after = this.last().map(|(id, _)| id.clone());
        pages.push(this);
        if !full {
            return pages;
        }
    }
}

/// The same pages read from the store itself, bypassing the cache.
async fn store_pages(data: &DataService) -> Vec<Vec<(String, i64)>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let docs = data.store().list(ORDERS, after.as_deref(), PAGE).await.expect("list");
        let this: Vec<(String, i64)> =
            docs.iter().map(|doc| (doc["_id"].as_str().expect("id").to_owned(), doc["quantity"].as_i64().expect("quantity"))).collect();
        let full = this.len() == PAGE as usize;
        after = this.last().map(|(id, _)| id.clone());
        pages.push(this);
        if !full {
            return pages;
        }
    }
}

async fn cached(cache: &dyn Cache, after: Option<&str>) -> bool {
    let key = format!("{}:{PAGE}", after.unwrap_or(""));
    cache.lookup(ORDERS, EntryKind::Page, &key).await.expect("lookup").value.is_some()
}

async fn full_pages_stay_cached_through_inserts(service: Service) {
    let data = &service.data;
    for quantity in 0..25 {
        insert(data, quantity).await;
    }
    let before = all_pages(data).await;
    assert_eq!(before.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let second_cursor = before[0].last().map(|(id, _)| id.clone());
    let last_cursor = before[1].last().map(|(id, _)| id.clone());
    assert!(cached(&*service.cache, None).await && cached(&*service.cache, last_cursor.as_deref()).await);

    let added = insert(data, 100).await;
    assert!(cached(&*service.cache, None).await, "the first page survives an insert");
    assert!(cached(&*service.cache, second_cursor.as_deref()).await, "so does every other full page");
    assert!(!cached(&*service.cache, last_cursor.as_deref()).await, "the last page does not");
    let last = page(data, last_cursor.as_deref()).await;
    assert_eq!(last.last(), Some(&(added, 100)), "a read after the insert sees it");
    assert_eq!(all_pages(data).await, store_pages(data).await);

    // Another sidecar's insert may carry a smaller id (ObjectIds of two
    // processes in the same second): it lands in an earlier page, and that
    // page must not be served without it. Its store write, then its cache step:
    let early = "000000000000000000000001";
    let doc = json!({ "_id": early, "product": "Banner", "quantity": 55 }).as_object().cloned().expect("an object");
    data.store().import(ORDERS, doc).await.expect("import");
    service.cache.inserted(ORDERS, early).await.expect("cache step");
    assert_eq!(page(data, None).await[0], (early.to_owned(), 55), "an insert below the top retires the pages");
    assert_eq!(all_pages(data).await, store_pages(data).await);

    // An update (or delete) may change any page: every page is read anew.
    let first_id = before[0][0].0.clone();
    assert!(cached(&*service.cache, None).await);
    let updated = data.update(ORDERS, &first_id, order(7), None).await.expect("update");
    assert!(matches!(updated, WriteOutcome::Done(_)));
    assert!(!cached(&*service.cache, None).await);
    assert!(page(data, None).await.contains(&(first_id.clone(), 7)), "a read after the update sees it");
    data.delete(ORDERS, &first_id, None).await.expect("delete");
    assert!(page(data, None).await.iter().all(|(id, _)| *id != first_id), "a read after the delete misses it");
    assert_eq!(all_pages(data).await, store_pages(data).await);
}

/// A page read from the store while another request inserts, filled after
/// the insert moved the tail (as under a slow store): a full page ending at
/// or below the top its lookup saw is kept, since the insert landed above
/// that top; a full page ending above it, and the last page, are not.
async fn full_pages_read_during_an_insert_are_kept(service: Service) {
    let (data, cache) = (&service.data, &*service.cache);
    let page_key = |after: Option<&str>| format!("{}:{PAGE}", after.unwrap_or(""));
    for quantity in 0..5 {
        insert(data, quantity).await;
    }
    let before_most = cache.lookup(ORDERS, EntryKind::Page, &page_key(None)).await.expect("lookup").generation;
    for quantity in 5..25 {
        insert(data, quantity).await;
    }
    let seen = cache.lookup(ORDERS, EntryKind::Page, &page_key(None)).await.expect("lookup").generation;
    let read = {
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..3 {
            let docs = data.store().list(ORDERS, after.as_deref(), PAGE).await.expect("list");
            let next = docs.last().and_then(|doc| doc["_id"].as_str()).map(str::to_owned);
            pages.push((after, docs));
            after = next;
        }
        pages
    };
    insert(data, 100).await;
    for (number, (after, docs), seen) in [(0, &read[0], &seen), (1, &read[1], &before_most), (2, &read[2], &seen)] {
        let ids: Vec<&str> = docs.iter().map(|doc| doc["_id"].as_str().expect("id")).collect();
        let entry = Entry::page(&ids, after.as_deref(), PAGE);
        let value = json!({ "docs": docs }).to_string();
        cache.fill(ORDERS, &entry, &page_key(after.as_deref()), seen, &value).await.expect("fill");
        let kept = cached(cache, after.as_deref()).await;
        assert_eq!(kept, number == 0, "page {number}: only the full page ending below the top seen is kept");
    }
    assert_eq!(all_pages(data).await, store_pages(data).await);
}

/// An insert that finishes after a later one (a slow store), or carries an
/// id from another sidecar, lands below the top: the pages it may belong in
/// are read anew, the pages before it stay cached.
async fn an_insert_below_the_top_retires_only_the_pages_it_may_belong_in(service: Service) {
    let (data, cache) = (&service.data, &*service.cache);
    let id = |n: u32| format!("{n:024x}");
    // The data path's two steps of an insert: the store write, then the cache's.
    let insert_as = |n: u32| async move {
        let doc = json!({ "_id": id(n), "product": "Banner", "quantity": n }).as_object().cloned().expect("an object");
        data.store().import(ORDERS, doc).await.expect("import");
        cache.inserted(ORDERS, &id(n)).await.expect("cache step");
    };
    for n in 1..=25 {
        insert_as(2 * n).await;
    }
    let before = all_pages(data).await;
    assert_eq!(before.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let (first_end, second_end) = (id(20), id(40));
    assert!(cached(cache, None).await && cached(cache, Some(&first_end)).await && cached(cache, Some(&second_end)).await);

    insert_as(31).await;
    assert!(cached(cache, None).await, "the first page ends below the late insert");
    assert!(!cached(cache, Some(&first_end)).await, "the second page may hold it");
    assert!(!cached(cache, Some(&second_end)).await, "the last page always grows");
    assert!(page(data, Some(&first_end)).await.contains(&(id(31), 31)), "a read after the insert sees it");
    assert_eq!(all_pages(data).await, store_pages(data).await);
    assert!(cached(cache, Some(&first_end)).await, "read anew after the insert, it is cached again");
}

/// Readers that miss one page at once share one store read; a reader that
/// begins after a write was acknowledged never shares a read begun before it.
async fn readers_missing_one_page_at_once_share_one_store_read(service: Service) {
    let (gated, data) = gated_with_orders(&service).await;
    gated.hold_next.store(true, Ordering::SeqCst);
    let readers: Vec<_> = (0..20).map(|_| tokio::spawn({ let data = data.clone(); async move { page(&data, None).await } })).collect();
    gated.held.notified().await;
    // Time for the other readers to miss and follow the held read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gated.release.notify_one();
    let mut answers = Vec::new();
    for reader in readers {
        answers.push(reader.await.expect("reader"));
    }
    assert_eq!(gated.lists.load(Ordering::SeqCst), 1, "20 readers missing the first page at once: one store read");
    // (Read past the gate, from the store the gate wraps.)
    let expected = store_pages(&service.data).await.swap_remove(0);
    assert!(answers.iter().all(|answer| *answer == expected), "every reader has the store's page");

    // A read held with what it read, then an update acknowledged: a reader
    // after the update must read the store again, not follow the held read.
    let first_id = expected[0].0.clone();
    data.update(ORDERS, &first_id, order(-1), None).await.expect("update");
    gated.hold_next.store(true, Ordering::SeqCst);
    let before_update = tokio::spawn({ let data = data.clone(); async move { page(&data, None).await } });
    gated.held.notified().await;
    data.update(ORDERS, &first_id, order(999), None).await.expect("update");
    assert!(page(&data, None).await.contains(&(first_id.clone(), 999)), "a read after the update sees it");
    gated.release.notify_one();
    assert!(before_update.await.expect("reader").contains(&(first_id.clone(), -1)), "the held read began before it");
    assert_eq!(all_pages(&data).await, store_pages(&data).await);
}

/// A reader following another's store read, when that reader gives up
/// (its request cancelled), looks again and leads: its own read fills the
/// cache.
async fn a_reader_whose_leader_gave_up_reads_and_fills_itself(service: Service) {
    let (gated, data) = gated_with_orders(&service).await;
    gated.hold_next.store(true, Ordering::SeqCst);
    let leader = tokio::spawn({ let data = data.clone(); async move { page(&data, None).await } });
    gated.held.notified().await;
    let follower = tokio::spawn({ let data = data.clone(); async move { page(&data, None).await } });
    // Time for the follower to miss and follow the held read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    leader.abort();
    let served = tokio::time::timeout(Duration::from_secs(5), follower).await.expect("the follower is not left waiting");
    assert_eq!(gated.lists.load(Ordering::SeqCst), 2, "the follower read once");
    assert!(cached(service.cache.as_ref(), None).await, "and filled the cache");
    assert_eq!(served.expect("follower"), store_pages(&data).await.swap_remove(0));
}

/// A page past its TTL that no write retired is served while one reader
/// reads it anew: an expiry keeps no other reader waiting on the store. A
/// change made past the cache (as `orders import` makes) shows once that
/// read is done; a write through the data path retires the page at once.
async fn a_page_past_its_ttl_is_served_while_one_reader_reads_it_anew(service: Service) {
    let (gated, data) = gated_with_orders(&service).await;
    let before = page(&data, None).await;
    let first_id = before[0].0.clone();
    let lists = || gated.lists.load(Ordering::SeqCst);
    assert_eq!(lists(), 1);
    data.store().update(ORDERS, &first_id, order(777), None).await.expect("a change past the cache");
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(200)).await;

    gated.hold_next.store(true, Ordering::SeqCst);
    let refresher = tokio::spawn({ let data = data.clone(); async move { page(&data, None).await } });
    gated.held.notified().await;
    for _ in 0..20 {
        let served = tokio::time::timeout(Duration::from_secs(2), page(&data, None)).await;
        assert_eq!(served.expect("served without waiting on the read under way"), before, "the stale copy");
    }
    assert_eq!(lists(), 2, "one reader read the page anew");
    gated.release.notify_one();
    let refreshed = refresher.await.expect("reader");
    assert!(refreshed.contains(&(first_id.clone(), 777)), "the reader that read it anew has the change");
    assert_eq!(page(&data, None).await, refreshed, "and the cache has it too");
    assert_eq!(lists(), 2);

    // Past its TTL again, the store failing: the copy, still current, is served.
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(200)).await;
    gated.fail_next.store(true, Ordering::SeqCst);
    assert_eq!(page(&data, None).await, refreshed, "a failed read anew serves the stale copy");
    assert_eq!(lists(), 3);

    // A write through the data path retires it, stale or not.
    data.update(ORDERS, &first_id, order(888), None).await.expect("update");
    assert!(page(&data, None).await.contains(&(first_id.clone(), 888)), "a read after the update sees it");

    // Unread for as long again as its TTL past it, an entry is gone.
    tokio::time::sleep(kept_for(SHORT_TTL) + Duration::from_millis(200)).await;
    assert!(!cached(service.cache.as_ref(), None).await);
}

/// Inserts while a stale page is read anew send no other reader to the
/// store: an insert above a full page moves the counters but leaves the
/// page current. After a failed re-read the page is not read again for a
/// pause (data.rs: a slow store is not sent its slow query back to back).
async fn a_stale_page_is_read_anew_once_through_inserts_and_paused_after_a_failure(service: Service) {
    let (gated, data) = gated_with_orders(&service).await;
    let before = page(&data, None).await;
    let lists = || gated.lists.load(Ordering::SeqCst);
    tokio::time::sleep(ROOMY_TTL + Duration::from_millis(200)).await;

    gated.hold_next.store(true, Ordering::SeqCst);
    let refresher = tokio::spawn({ let data = data.clone(); async move { page(&data, None).await } });
    gated.held.notified().await;
    for quantity in 100..110 {
        insert(&data, quantity).await;
        let served = tokio::time::timeout(Duration::from_secs(2), page(&data, None)).await;
        assert_eq!(served.expect("served without waiting on the read under way"), before, "the stale copy, current");
    }
    assert_eq!(lists(), 2, "one reader read the page anew, inserts or not");
    gated.release.notify_one();
    assert_eq!(refresher.await.expect("reader"), before);

    tokio::time::sleep(ROOMY_TTL + Duration::from_millis(200)).await;
    gated.fail_next.store(true, Ordering::SeqCst);
    assert_eq!(page(&data, None).await, before, "a failed read anew serves the stale copy");
    assert_eq!(lists(), 3);
    for quantity in 200..205 {
        insert(&data, quantity).await;
        assert_eq!(page(&data, None).await, before);
    }
    assert_eq!(lists(), 3, "not read again straight after a failure");
    // The first pause after a failure is a second (data.rs).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(page(&data, None).await, before);
    assert_eq!(lists(), 4, "read again once the pause is over");
    assert_eq!(page(&data, None).await, before);
    assert_eq!(lists(), 4, "and cached afresh");
}

/// Writers and readers at once: after each of its writes (insert, update,
/// delete of its own orders) is acknowledged, a writer's reads through the
/// cache see it while the others keep inserting, and at the end every page
/// the cache answers is the store's.
async fn no_stale_read_under_concurrent_writes(service: Service) {
    let data = &service.data;
    for quantity in 0..15 {
        insert(data, quantity).await;
    }
    let mut tasks = Vec::new();
    for writer in 0..6i64 {
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..15i64 {
                let quantity = 1000 * (writer + 1) + round;
                let id = insert(&data, quantity).await;
                let seen = all_pages(&data).await.concat();
                assert!(seen.contains(&(id.clone(), quantity)), "writer {writer} round {round}: its insert is missing");
                if round % 3 == 0 {
                    data.update(ORDERS, &id, order(-quantity), None).await.expect("update");
                    let seen = all_pages(&data).await.concat();
                    assert!(seen.contains(&(id.clone(), -quantity)), "writer {writer} round {round}: its update is missing");
                }
                if round % 5 == 4 {
                    data.delete(ORDERS, &id, None).await.expect("delete");
                    assert!(
                        all_pages(&data).await.concat().iter().all(|(seen, _)| *seen != id),
                        "writer {writer}: deleted order still listed"
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    assert_eq!(all_pages(data).await, store_pages(data).await);
}

/// A write the store applies after its caller gave up (the store timeout
/// answered 503) still retires what the cache holds of it: the document it
/// changed, and the last page an insert extends. Before, the write's cache
/// step went with its caller, and the old copies were served until the TTL.
async fn a_write_applied_after_its_timeout_still_retires_the_cached_copies(service: Service) {
    let gated = Arc::new(GatedStore::new(service.data.store().clone()));
    let data = gated.data_with_timeout(&service, Duration::from_millis(100));
    let id = insert(&data, 1).await;
    let quantity = |body: String| serde_json::from_str::<Value>(&body).expect("JSON")["doc"]["quantity"].as_i64();
    assert_eq!(quantity(data.get_body(ORDERS, &id).await.expect("read").expect("found")), Some(1));
    assert_eq!(page(&data, None).await.len(), 1, "the last page, now cached");

    *gated.late_writes.lock().expect("lock") = Some(Duration::from_millis(400));
    let set = json!({ "quantity": 2 }).as_object().cloned().expect("an object");
    let updated = data.update(ORDERS, &id, set, None).await;
    assert!(matches!(updated, Err(StoreError::Unavailable(_))), "the caller gave up: {updated:?}");
    let inserted = data.insert(ORDERS, order(3), None).await;
    assert!(matches!(inserted, Err(StoreError::Unavailable(_))), "the caller gave up: {inserted:?}");
    *gated.late_writes.lock().expect("lock") = None;

    // The store applies both a moment later, and then the copies cached
    // before them must go (the TTL is minutes away).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let order = quantity(data.get_body(ORDERS, &id).await.expect("read").expect("found"));
        let listed = page(&data, None).await.len();
        if (order, listed) == (Some(2), 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still served from before the late writes: quantity {order:?}, {listed} listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

macro_rules! both_caches {
    ($($case:ident => $ttl:expr),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    super::$case(service(Arc::new(MemoryCache::new(10_000, $ttl)))).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let redis = RedisServer::start().expect("redis");
                    let cache = RedisCache::connect(&redis.url, "cache-conformance", $ttl).await.expect("connect");
                    super::$case(service(Arc::new(cache))).await;
                }
            )*
        }
    };
}

/// Longer than any case runs: its entries never turn stale.
const TTL: Duration = Duration::from_secs(300);
/// For the case about entries past their TTL.
const SHORT_TTL: Duration = Duration::from_secs(1);
/// For the case that writes while an entry is stale: room for its writes
/// before the entry is gone (at twice its TTL).
const ROOMY_TTL: Duration = Duration::from_secs(3);

both_caches!(
    full_pages_stay_cached_through_inserts => TTL,
    full_pages_read_during_an_insert_are_kept => TTL,
    an_insert_below_the_top_retires_only_the_pages_it_may_belong_in => TTL,
    readers_missing_one_page_at_once_share_one_store_read => TTL,
    a_reader_whose_leader_gave_up_reads_and_fills_itself => TTL,
    a_page_past_its_ttl_is_served_while_one_reader_reads_it_anew => SHORT_TTL,
    a_stale_page_is_read_anew_once_through_inserts_and_paused_after_a_failure => ROOMY_TTL,
    no_stale_read_under_concurrent_writes => TTL,
    a_write_applied_after_its_timeout_still_retires_the_cached_copies => TTL,
);
