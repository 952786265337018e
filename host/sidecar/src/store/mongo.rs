//! MongoDB through the official driver: one bounded pool per process,
//! timeouts that hold under load but fail fast on a dead server, write
//! concern `majority` by default, configurable read preference, and the
//! idempotency keys in their own collection with a TTL index.
//!
//! Idempotent inserts without transactions (which need a replica set and
//! cost round trips): the key document is inserted first, carrying the new
//! order's `_id`; the unique `_id` of the key collection decides which of
//! several concurrent requests wins. The winner inserts the order and
//! records the result on the key. A loser with the same fingerprint
//! returns the recorded result, or completes an insert its winner did not
//! finish (crashed), using the `_id` the key holds, so no retry ever
//! creates a second order.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use mongodb::options::{
    ClientOptions, FindOneAndUpdateOptions, IndexOptions, ReadPreference, ReturnDocument,
    SelectionCriteria, WriteConcern,
};
use mongodb::event::cmap::CmapEvent;
use mongodb::action::Action;
use mongodb::{Client, Collection, Database, IndexModel};
use serde_json::{Map, Value};

use super::{
    Doc, DocumentStore, IDEMPOTENCY_RETENTION_SECS, IMPLICIT_VERSION, Idempotency, ImportOutcome, InsertOutcome, StoreError,
    StoreResult, WriteOutcome, is_object_id, reject_reserved_fields, split_import,
};

const KEYS_COLLECTION: &str = "idempotency_keys";

/// MongoDB settings, validated before connecting. Its `Debug` leaves the
/// URI out: it may carry a password.
#[derive(Clone)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
    pub max_pool_size: u32,
    pub connect_timeout: Duration,
    pub server_selection_timeout: Duration,
    /// How many nodes acknowledge a write (always journaled).
    pub write_concern: mongodb::options::Acknowledgment,
    pub read_preference: ReadPreference,
    /// Physical collection names by the API's collection name, e.g.
    /// `orders` → `orders` (the old deployment's name, the default).
    pub collection_names: std::collections::HashMap<String, String>,
    /// The server's own bound on a read (`maxTimeMS`): the sidecar's store
    /// timeout, so a query it gave up on does not go on loading the server.
    pub read_time_limit: Option<Duration>,
}

impl std::fmt::Debug for MongoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSettings")
            .field("uri", &"<redacted>")
            .field("database", &self.database)
            .field("max_pool_size", &self.max_pool_size)
            .field("write_concern", &self.write_concern)
            .field("read_preference", &self.read_preference)
            .field("read_time_limit", &self.read_time_limit)
            .finish_non_exhaustive()
    }
}

pub struct MongoStore {
    database: Database,
    host_list: String,
    pool: Arc<PoolCounters>,
    collection_names: std::collections::HashMap<String, String>,
    read_time_limit: Option<Duration>,
}

/// Connections of the driver's pool, counted from its CMAP events (the
/// driver exposes no pool gauge of its own).
#[derive(Default)]
struct PoolCounters {
    open: AtomicI64,
    checked_out: AtomicI64,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("mongodb: {error}"))
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e.write_errors.as_ref().is_some_and(|errors| errors.iter().any(|e| e.code == 11000)),
        _ => false,
    }
}

/// The URI's hosts, for messages: never its credentials.
pub fn redacted_hosts(options: &ClientOptions) -> String {
    options.hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

impl MongoStore {
    /// Connects, checks the server answers, and creates the indexes (which
    /// is idempotent: starting twice, or on an empty database, is fine).
    pub async fn connect(settings: &MongoSettings) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(&settings.uri)
            .await
            .map_err(|e| anyhow::anyhow!("the MongoDB URI (--mongo-uri / ORDERS_MONGO_URI) is invalid: {}", e.kind))?;
        let host_list = redacted_hosts(&options);
        options.app_name = Some("orders-sidecar".into());
        options.max_pool_size = Some(settings.max_pool_size);
        options.min_pool_size = Some(settings.max_pool_size.min(4));
        options.connect_timeout = Some(settings.connect_timeout);
        options.server_selection_timeout = Some(settings.server_selection_timeout);
        options.max_idle_time = Some(Duration::from_secs(300));
        options.write_concern = Some(WriteConcern::builder().journal(true).w(settings.write_concern.clone()).build());
        options.selection_criteria = Some(SelectionCriteria::ReadPreference(settings.read_preference.clone()));
        let pool = Arc::new(PoolCounters::default());
        let counters = pool.clone();
        options.cmap_event_handler = Some(mongodb::event::EventHandler::callback(move |event: CmapEvent| {
            let (counter, delta) = match event {
                CmapEvent::ConnectionCreated(_) => (&counters.open, 1),
                CmapEvent::ConnectionClosed(_) => (&counters.open, -1),
                CmapEvent::ConnectionCheckedOut(_) => (&counters.checked_out, 1),
                CmapEvent::ConnectionCheckedIn(_) => (&counters.checked_out, -1),
                _ => return,
            };
            counter.fetch_add(delta, Ordering::Relaxed);
        }));
        let client = Client::with_options(options).map_err(|e| anyhow::anyhow!("cannot create MongoDB client: {e}"))?;
        let database = client.database(&settings.database);
        database.run_command(doc! { "ping": 1 }).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach MongoDB at {host_list} (from --mongo-uri / ORDERS_MONGO_URI) within {:?}: {}",
                settings.server_selection_timeout,
                e.kind
            )
        })?;
        let store = Self {
            database,
            host_list,
            pool,
            collection_names: settings.collection_names.clone(),
            read_time_limit: settings.read_time_limit,
        };
        store.create_indexes().await?;
        Ok(store)
    }

    pub fn hosts(&self) -> &str {
        &self.host_list
    }

    /// The product's database, for the stores that share its connection pool (API keys).
    pub fn database(&self) -> &Database {
        &self.database
    }

    async fn create_indexes(&self) -> anyhow::Result<()> {
        let ttl = IndexModel::builder()
            .keys(doc! { "created_at": 1 })
            .options(
                IndexOptions::builder()
                    .name("idempotency_ttl".to_owned())
                    .expire_after(Duration::from_secs(IDEMPOTENCY_RETENTION_SECS as u64))
                    .build(),
            )
            .build();
        self.keys().create_index(ttl).await.map_err(|e| anyhow::anyhow!("cannot create the idempotency TTL index: {e}"))?;
        Ok(())
    }

    fn documents(&self, collection: &str) -> Collection<Document> {
        let physical = self.collection_names.get(collection).map(String::as_str).unwrap_or(collection);
        self.database.collection(physical)
    }

    fn keys(&self) -> Collection<Document> {
        self.database.collection(KEYS_COLLECTION)
    }

    async fn insert_document(&self, collection: &str, id: ObjectId, fields: &Map<String, Value>) -> StoreResult<Result<Doc, ()>> {
        let mut document = doc! { "_id": id };
        for (name, value) in fields {
            document.insert(name.clone(), Bson::try_from(value.clone()).map_err(|e| StoreError::Invalid(e.to_string()))?);
        }
        document.insert("version", 1_i64);
        match self.documents(collection).insert_one(&document).await {
            Ok(_) => Ok(Ok(to_json(document))),
            Err(error) if is_duplicate_key(&error) => Ok(Err(())),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Completes or replays the insert recorded under an existing key.
    async fn replay(&self, collection: &str, key_id: &str, fields: &Map<String, Value>, fingerprint: &str) -> StoreResult<InsertOutcome> {
        let Some(key) = self.keys().find_one(doc! { "_id": key_id }).await.map_err(unavailable)? else {
            // Expired between our insert attempt and this read.
            return Err(StoreError::Unavailable("idempotency key expired during the request; retry".into()));
        };
        if key.get_str("fingerprint").unwrap_or_default() != fingerprint {
            return Ok(InsertOutcome::KeyConflict);
        }
        if let Ok(result) = key.get_document("result") {
            return Ok(InsertOutcome::Replayed(to_json(result.clone())));
        }
        let id = key.get_object_id("doc_id").map_err(unavailable)?;
        let doc = match self.insert_document(collection, id, fields).await? {
            Ok(doc) => doc,
            Err(()) => match self.documents(collection).find_one(doc! { "_id": id }).await.map_err(unavailable)? {
                Some(existing) => to_json(existing),
                None => return Err(StoreError::Unavailable("the first request with this key is still in progress; retry".into())),
            },
        };
        self.record_result(key_id, &doc).await?;
        Ok(InsertOutcome::Replayed(doc))
    }

    async fn record_result(&self, key_id: &str, doc: &Doc) -> StoreResult<()> {
        let result = bson::to_document(doc).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.keys()
            .update_one(doc! { "_id": key_id, "result": { "$exists": false } }, doc! { "$set": { "result": result } })
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

fn object_id(id: &str) -> StoreResult<ObjectId> {
    if !is_object_id(id) {
        return Err(StoreError::Invalid(format!("{id:?} is not an ObjectId")));
    }
    ObjectId::parse_str(id).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// A stored document as the API's JSON: `_id` as hex, numbers as numbers.
fn to_json(mut document: Document) -> Doc {
    let id = match document.remove("_id") {
        Some(Bson::ObjectId(id)) => Value::from(id.to_hex()),
        Some(other) => other.into_relaxed_extjson(),
        None => Value::Null,
    };
    let mut doc = Map::with_capacity(document.len() + 1);
    doc.insert("_id".into(), id);
    for (name, value) in document {
        doc.insert(name, value.into_relaxed_extjson());
    }
    // `version` last, as the embedded store returns it.
    if let Some(version) = doc.remove("version") {
        doc.insert("version".into(), version);
    }
    doc
}

/// The document at `if_version`, or at any version it has. Documents the old
/// service wrote have no `version`; `$inc` would make theirs 1 where the
/// contract says 2, so they are given their implicit 1 first (`heal_version`).
fn versioned_filter(id: ObjectId, if_version: Option<i64>) -> Document {
    match if_version {
        Some(version) => doc! { "_id": id, "version": version },
        None => doc! { "_id": id, "version": { "$exists": true } },
    }
}

/// Every ObjectId sorts at or after this one, and nothing else does: MongoDB
/// compares values of one BSON type at a time, so `$gte` selects the
/// documents whose `_id` the API can name.
const LOWEST_OBJECT_ID: [u8; 12] = [0; 12];

fn json_to_bson_document(fields: &Map<String, Value>) -> StoreResult<Document> {
    match Bson::try_from(Value::Object(fields.clone())) {
        Ok(Bson::Document(document)) => Ok(document),
        Ok(_) => Err(StoreError::Invalid("not a document".into())),
        Err(error) => Err(StoreError::Invalid(error.to_string())),
    }
}

#[async_trait]
impl DocumentStore for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    fn pool_stats(&self) -> Option<(u64, u64)> {
        let open = self.pool.open.load(Ordering::Relaxed).max(0) as u64;
        let in_use = self.pool.checked_out.load(Ordering::Relaxed).max(0) as u64;
        Some((in_use, open.saturating_sub(in_use)))
    }

    async fn ping(&self) -> StoreResult<()> {
        self.database.run_command(doc! { "ping": 1 }).await.map(drop).map_err(unavailable)
    }

    async fn get(&self, collection: &str, id: &str) -> StoreResult<Option<Doc>> {
        let id = object_id(id)?;
        let found = self
            .documents(collection)
            .find_one(doc! { "_id": id })
            .optional(self.read_time_limit, |find, limit| find.max_time(limit))
            .await
            .map_err(unavailable)?;
        Ok(found.map(to_json))
    }

    async fn list(&self, collection: &str, after: Option<&str>, limit: u32) -> StoreResult<Vec<Doc>> {
        use futures::TryStreamExt;
        let filter = match after {
            Some(after) => doc! { "_id": { "$gt": object_id(after)? } },
            None => doc! { "_id": { "$gte": ObjectId::from_bytes(LOWEST_OBJECT_ID) } },
        };
        let cursor = self
            .documents(collection)
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(i64::from(limit))
            .batch_size(limit.min(1000))
            .optional(self.read_time_limit, |find, limit| find.max_time(limit))
            .await
            .map_err(unavailable)?;
        let documents: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        Ok(documents.into_iter().map(to_json).collect())
    }

    async fn insert(&self, collection: &str, fields: Map<String, Value>, idempotency: Option<Idempotency>) -> StoreResult<InsertOutcome> {
        reject_reserved_fields(&fields)?;
        let id = ObjectId::new();
        let Some(idempotency) = idempotency else {
            return match self.insert_document(collection, id, &fields).await? {
                Ok(doc) => Ok(InsertOutcome::Created(doc)),
                Err(()) => Err(StoreError::Unavailable("ObjectId collision; retry".into())),
            };
        };
        let key_id = format!("{collection}:{}", idempotency.key);
        let key = doc! {
            "_id": &key_id,
            "fingerprint": &idempotency.fingerprint,
            "doc_id": id,
            "created_at": bson::DateTime::now(),
        };
        match self.keys().insert_one(key).await {
            Ok(_) => {}
            Err(error) if is_duplicate_key(&error) => {
                return self.replay(collection, &key_id, &fields, &idempotency.fingerprint).await;
            }
            Err(error) => return Err(unavailable(error)),
        }
        let doc = match self.insert_document(collection, id, &fields).await? {
            Ok(doc) => doc,
            // A concurrent retry with the same key completed our insert (same
            // fields, the `_id` our key holds): the order exists once.
            Err(()) => match self.documents(collection).find_one(doc! { "_id": id }).await.map_err(unavailable)? {
                Some(existing) => to_json(existing),
                None => return Err(StoreError::Unavailable("the order was deleted while it was being created; retry".into())),
            },
        };
        self.record_result(&key_id, &doc).await?;
        Ok(InsertOutcome::Created(doc))
    }

    async fn update(&self, collection: &str, id: &str, set: Map<String, Value>, if_version: Option<i64>) -> StoreResult<WriteOutcome<Doc>> {
        reject_reserved_fields(&set)?;
        let object_id = object_id(id)?;
        let set = json_to_bson_document(&set)?;
        let options = FindOneAndUpdateOptions::builder().return_document(ReturnDocument::After).build();
        let update = doc! { "$set": set, "$inc": { "version": 1_i64 } };
        let mut healed = false;
        loop {
            let updated = self
                .documents(collection)
                .find_one_and_update(versioned_filter(object_id, if_version), update.clone())
                .with_options(options.clone())
                .await
                .map_err(unavailable)?;
            match updated {
                Some(document) => return Ok(WriteOutcome::Done(to_json(document))),
                None if !healed && self.heal_version(collection, object_id, if_version).await? => healed = true,
                None => return self.missed(collection, object_id).await,
            }
        }
    }

    async fn delete(&self, collection: &str, id: &str, if_version: Option<i64>) -> StoreResult<WriteOutcome<()>> {
        let object_id = object_id(id)?;
        let filter = match if_version {
            Some(version) => doc! { "_id": object_id, "version": version },
            None => doc! { "_id": object_id },
        };
        let mut healed = false;
        loop {
            let result = self.documents(collection).delete_one(filter.clone()).await.map_err(unavailable)?;
            if result.deleted_count == 1 {
                return Ok(WriteOutcome::Done(()));
            }
            if healed || !self.heal_version(collection, object_id, if_version).await? {
                return self.missed(collection, object_id).await;
            }
            healed = true;
        }
    }

    async fn count(&self, collection: &str) -> StoreResult<u64> {
        self.documents(collection).count_documents(doc! {}).await.map_err(unavailable)
    }

    async fn import(&self, collection: &str, doc: Doc) -> StoreResult<ImportOutcome> {
        let (id, version, fields) = split_import(doc)?;
        let id = object_id(&id)?;
        let mut document = doc! { "_id": id };
        document.extend(json_to_bson_document(&fields)?);
        if let Some(version) = version {
            document.insert("version", version);
        }
        match self.documents(collection).insert_one(&document).await {
            Ok(_) => Ok(ImportOutcome::Inserted),
            Err(error) if is_duplicate_key(&error) => {
                let existing = self.documents(collection).find_one(doc! { "_id": id }).await.map_err(unavailable)?;
                let same = existing.is_some_and(|existing| to_json(existing) == to_json(document));
                Ok(if same { ImportOutcome::Unchanged } else { ImportOutcome::Differs })
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn backfill(&self, collection: &str, id: &str, at_version: Option<i64>, set: Map<String, Value>, version: i64) -> StoreResult<bool> {
        reject_reserved_fields(&set)?;
        let object_id = object_id(id)?;
        let filter = match at_version {
            Some(at) => doc! { "_id": object_id, "version": at },
            None => doc! { "_id": object_id, "version": { "$exists": false } },
        };
        let mut set = json_to_bson_document(&set)?;
        set.insert("version", version);
        let result = self.documents(collection).update_one(filter, doc! { "$set": set }).await.map_err(unavailable)?;
        Ok(result.matched_count == 1)
    }
}

impl MongoStore {
    /// Gives a document stored without `version` its implicit version, when
    /// the write at hand may apply to it; whether it did.
    async fn heal_version(&self, collection: &str, id: ObjectId, if_version: Option<i64>) -> StoreResult<bool> {
        if if_version.is_some_and(|version| version != IMPLICIT_VERSION) {
            return Ok(false);
        }
        let result = self
            .documents(collection)
            .update_one(doc! { "_id": id, "version": { "$exists": false } }, doc! { "$set": { "version": IMPLICIT_VERSION } })
            .await
            .map_err(unavailable)?;
        Ok(result.modified_count == 1)
    }

    async fn missed<T>(&self, collection: &str, id: ObjectId) -> StoreResult<WriteOutcome<T>> {
        let exists = self.documents(collection).find_one(doc! { "_id": id }).await.map_err(unavailable)?;
        Ok(if exists.is_some() { WriteOutcome::VersionMismatch } else { WriteOutcome::NotFound })
    }
}
