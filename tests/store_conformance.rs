//! One conformance suite, two stores: every case runs against the embedded
//! SQLite store and against MongoDB (a real `mongod` if on PATH, otherwise
//! the SecantusDB server the fixture starts; see ../shared/MONGO.md).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ::mongodb::options::{Acknowledgment, ReadPreference};
use orders_sidecar::store::mongo::{MongoSettings, MongoStore};
use orders_sidecar::store::sqlite::SqliteStore;
use orders_sidecar::store::{Doc, DocumentStore, Idempotency, ImportOutcome, InsertOutcome, StoreError, WriteOutcome};
use orders_testkit::fault_proxy::FaultProxy;
use orders_testkit::services::MongoServer;
use orders_vocabulary::id::is_object_id;
use serde_json::{Map, Value, json};

const ORDERS: &str = orders_vocabulary::names::ORDERS_COLLECTION;

fn fields(product: &str) -> Map<String, Value> {
    json!({"product": product, "quantity": 2, "customer_name": "Ada", "customer_address": "1 Main St"})
        .as_object()
        .cloned()
        .expect("object")
}

fn id_of(doc: &Doc) -> String {
    doc["_id"].as_str().expect("_id").to_owned()
}

fn key(key: &str, fingerprint: &str) -> Option<Idempotency> {
    Some(Idempotency { key: key.into(), fingerprint: fingerprint.into() })
}

async fn created(store: &dyn DocumentStore, product: &str) -> Doc {
    match store.insert(ORDERS, fields(product), None).await.expect("insert") {
        InsertOutcome::Created(doc) => doc,
        other => panic!("expected Created, got {other:?}"),
    }
}

async fn insert_assigns_id_and_version(store: Arc<dyn DocumentStore>) {
    let doc = created(&*store, "a").await;
    let id = id_of(&doc);
    assert!(is_object_id(&id), "{id}");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["quantity"], 2);
    assert_eq!(store.get(ORDERS, &id).await.expect("get"), Some(doc));
    assert_eq!(store.get(ORDERS, "0123456789abcdef01234567").await.expect("get"), None);
}

async fn store_owned_fields_are_rejected(store: Arc<dyn DocumentStore>) {
    let mut bad = fields("x");
    bad.insert("version".into(), json!(9));
    assert!(matches!(store.insert(ORDERS, bad, None).await, Err(StoreError::Invalid(_))));
    let id = id_of(&created(&*store, "y").await);
    let mut set = Map::new();
    set.insert("_id".into(), json!("0123456789abcdef01234567"));
    assert!(matches!(store.update(ORDERS, &id, set, None).await, Err(StoreError::Invalid(_))));
}

async fn list_is_ordered_by_id_after_a_cursor(store: Arc<dyn DocumentStore>) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(id_of(&created(&*store, &format!("p{n}")).await));
    }
    let all: Vec<String> = store.list(ORDERS, None, 1000).await.expect("list").iter().map(id_of).collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    let after: Vec<String> = store.list(ORDERS, Some(&ids[1]), 2).await.expect("list").iter().map(id_of).collect();
    assert_eq!(after, ids[2..4].to_vec());
}

async fn update_sets_fields_and_bumps_version(store: Arc<dyn DocumentStore>) {
    let id = id_of(&created(&*store, "u").await);
    let set = json!({"quantity": 9}).as_object().cloned().expect("object");
    let WriteOutcome::Done(doc) = store.update(ORDERS, &id, set.clone(), Some(1)).await.expect("update") else { panic!("not done") };
    assert_eq!((doc["quantity"].clone(), doc["version"].clone(), doc["product"].clone()), (json!(9), json!(2), json!("u")));
    assert_eq!(store.update(ORDERS, &id, set.clone(), Some(1)).await.expect("update"), WriteOutcome::VersionMismatch);
    assert_eq!(store.update(ORDERS, "0123456789abcdef01234567", set, None).await.expect("update"), WriteOutcome::NotFound);
    assert_eq!(store.get(ORDERS, &id).await.expect("get").expect("doc")["version"], 2);
}

async fn delete_respects_versions(store: Arc<dyn DocumentStore>) {
    let id = id_of(&created(&*store, "d").await);
    assert_eq!(store.delete(ORDERS, &id, Some(5)).await.expect("delete"), WriteOutcome::VersionMismatch);
    assert_eq!(store.delete(ORDERS, &id, Some(1)).await.expect("delete"), WriteOutcome::Done(()));
    assert_eq!(store.delete(ORDERS, &id, None).await.expect("delete"), WriteOutcome::NotFound);
    assert_eq!(store.get(ORDERS, &id).await.expect("get"), None);
}

async fn idempotency_replays_and_detects_conflicts(store: Arc<dyn DocumentStore>) {
    let first = store.insert(ORDERS, fields("i"), key("k1", "f1")).await.expect("insert");
    let InsertOutcome::Created(doc) = first else { panic!("{first:?}") };
    assert_eq!(store.insert(ORDERS, fields("i"), key("k1", "f1")).await.expect("retry"), InsertOutcome::Replayed(doc.clone()));
    assert_eq!(store.insert(ORDERS, fields("other"), key("k1", "f2")).await.expect("conflict"), InsertOutcome::KeyConflict);
    // The replay returns the first result even after the order changed or went.
    store.delete(ORDERS, &id_of(&doc), None).await.expect("delete");
    assert_eq!(store.insert(ORDERS, fields("i"), key("k1", "f1")).await.expect("retry"), InsertOutcome::Replayed(doc));
    assert!(store.get(ORDERS, &id_of(&created(&*store, "z").await)).await.expect("get").is_some());
}

async fn concurrent_retries_with_one_key_create_one_document(store: Arc<dyn DocumentStore>) {
    let before = store.list(ORDERS, None, 10_000).await.expect("list").len();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.insert(ORDERS, fields("race"), key("race-key", "same")).await })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created_count = 0;
    for task in tasks {
        match task.await.expect("join").expect("insert") {
            InsertOutcome::Created(doc) => {
                created_count += 1;
                ids.insert(id_of(&doc));
            }
            InsertOutcome::Replayed(doc) => {
                ids.insert(id_of(&doc));
            }
            InsertOutcome::KeyConflict => panic!("same fingerprint reported as conflict"),
        }
    }
    assert_eq!(created_count, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(store.list(ORDERS, None, 10_000).await.expect("list").len(), before + 1);
}

async fn concurrent_versioned_updates_apply_once(store: Arc<dyn DocumentStore>) {
    let id = id_of(&created(&*store, "v").await);
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let set = json!({"quantity": n + 1}).as_object().cloned().expect("object");
                store.update(ORDERS, &id, set, Some(1)).await
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        match task.await.expect("join").expect("update") {
            WriteOutcome::Done(_) => done += 1,
            WriteOutcome::VersionMismatch => {}
            WriteOutcome::NotFound => panic!("lost the document"),
        }
    }
    assert_eq!(done, 1);
    assert_eq!(store.get(ORDERS, &id).await.expect("get").expect("doc")["version"], 2);
}

async fn concurrent_writers_lose_nothing(store: Arc<dyn DocumentStore>) {
    let before = store.list(ORDERS, None, 10_000).await.expect("list").len();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.insert(ORDERS, fields(&format!("w{n}")), None).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        let InsertOutcome::Created(doc) = task.await.expect("join").expect("insert") else { panic!("not created") };
        ids.insert(id_of(&doc));
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(store.list(ORDERS, None, 10_000).await.expect("list").len(), before + 50);
}

/// A document as the old service stored it: no version, no timestamps, and
/// values the contract refuses, imported as `orders import` does.
async fn imported_legacy(store: &dyn DocumentStore, quantity: Value) -> String {
    let id = bson::oid::ObjectId::new().to_hex();
    let doc = json!({"_id": id, "product": "Old banner", "quantity": quantity, "customer_name": null, "customer_address": "1 Main St", "coupon": {"code": "SPRING"}});
    let outcome = store.import(ORDERS, doc.as_object().cloned().expect("object")).await.expect("import");
    assert_eq!(outcome, ImportOutcome::Inserted);
    id
}

async fn legacy_documents_are_returned_as_stored_without_a_version(store: Arc<dyn DocumentStore>) {
    let id = imported_legacy(&*store, json!("7")).await;
    let doc = store.get(ORDERS, &id).await.expect("get").expect("found");
    assert_eq!(doc.get("version"), None, "no version is invented by the store");
    assert_eq!((doc["quantity"].clone(), doc["customer_name"].clone(), doc["coupon"].clone()), (json!("7"), Value::Null, json!({"code": "SPRING"})));
    let listed = store.list(ORDERS, None, 10).await.expect("list");
    assert_eq!(listed, vec![doc]);
    assert_eq!(store.count(ORDERS).await.expect("count"), 1);
}

async fn a_document_without_a_version_counts_as_version_one(store: Arc<dyn DocumentStore>) {
    let id = imported_legacy(&*store, json!(2.5)).await;
    let stale = store.update(ORDERS, &id, fields("x"), Some(2)).await.expect("update");
    assert_eq!(stale, WriteOutcome::VersionMismatch);
    let WriteOutcome::Done(doc) = store.update(ORDERS, &id, json!({"quantity": 3}).as_object().cloned().unwrap(), Some(1)).await.expect("update") else {
        panic!("If-Match 1 applies to a document stored without a version");
    };
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["customer_name"], Value::Null, "fields not set keep their stored value");
    assert_eq!(doc["coupon"], json!({"code": "SPRING"}));
    assert_eq!(store.update(ORDERS, &id, fields("y"), Some(1)).await.expect("update"), WriteOutcome::VersionMismatch);

    let unversioned = imported_legacy(&*store, json!(1)).await;
    let WriteOutcome::Done(doc) = store.update(ORDERS, &unversioned, fields("z"), None).await.expect("update") else { panic!("update") };
    assert_eq!(doc["version"], 2, "an unconditional update of version 1 gives 2");

    let to_delete = imported_legacy(&*store, json!(1)).await;
    assert_eq!(store.delete(ORDERS, &to_delete, Some(2)).await.expect("delete"), WriteOutcome::VersionMismatch);
    assert_eq!(store.delete(ORDERS, &to_delete, Some(1)).await.expect("delete"), WriteOutcome::Done(()));
}

async fn import_is_idempotent_by_id(store: Arc<dyn DocumentStore>) {
    let id = imported_legacy(&*store, json!("7")).await;
    let same = json!({"_id": id, "product": "Old banner", "quantity": "7", "customer_name": null, "customer_address": "1 Main St", "coupon": {"code": "SPRING"}});
    assert_eq!(store.import(ORDERS, same.as_object().cloned().unwrap()).await.expect("import"), ImportOutcome::Unchanged);
    let other = json!({"_id": id, "product": "Other"});
    assert_eq!(store.import(ORDERS, other.as_object().cloned().unwrap()).await.expect("import"), ImportOutcome::Differs);
    assert_eq!(store.get(ORDERS, &id).await.expect("get").expect("kept")["product"], "Old banner", "never overwritten");
    let versioned = json!({"_id": bson::oid::ObjectId::new().to_hex(), "product": "v", "version": 4});
    store.import(ORDERS, versioned.as_object().cloned().unwrap()).await.expect("import");
    assert_eq!(store.get(ORDERS, versioned["_id"].as_str().unwrap()).await.expect("get").expect("found")["version"], 4);
    let foreign = json!({"_id": "legacy-1"});
    assert!(matches!(store.import(ORDERS, foreign.as_object().cloned().unwrap()).await, Err(StoreError::Invalid(_))));
}

async fn backfill_applies_only_at_the_version_it_was_judged_at(store: Arc<dyn DocumentStore>) {
    let id = imported_legacy(&*store, json!("7")).await;
    let set = json!({"quantity": 7, "created_at": "2024-01-12T21:44:35.000Z"}).as_object().cloned().unwrap();
    assert!(!store.backfill(ORDERS, &id, Some(1), set.clone(), 2).await.expect("backfill"), "judged at a version it does not have");
    assert!(store.backfill(ORDERS, &id, None, set.clone(), 2).await.expect("backfill"));
    let doc = store.get(ORDERS, &id).await.expect("get").expect("found");
    assert_eq!((doc["quantity"].clone(), doc["version"].clone(), doc["customer_name"].clone()), (json!(7), json!(2), Value::Null));
    assert!(!store.backfill(ORDERS, &id, None, set, 2).await.expect("backfill"), "a second run finds it changed");
    assert!(!store.backfill(ORDERS, &bson::oid::ObjectId::new().to_hex(), None, Map::new(), 1).await.expect("backfill of a missing id"));
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store: Arc<dyn DocumentStore> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
                    super::$case(store).await;
                }
            )*
        }
        mod mongodb {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let server = MongoServer::start().expect("MongoDB-wire server");
                    let store: Arc<dyn DocumentStore> = Arc::new(mongo_store(&server.uri, stringify!($case)).await);
                    super::$case(store).await;
                }
            )*
        }
    };
}

async fn mongo_store(uri: &str, database: &str) -> MongoStore {
    MongoStore::connect(&mongo_settings(uri, database)).await.expect("connect")
}

fn mongo_settings(uri: &str, database: &str) -> MongoSettings {
    MongoSettings {
        uri: uri.to_owned(),
        database: database.to_owned(),
        max_pool_size: 8,
        connect_timeout: Duration::from_secs(5),
        server_selection_timeout: Duration::from_secs(5),
        write_concern: Acknowledgment::Majority,
        // A one-node server: read preferences other than primary cannot be
        // exercised here, only passed through (see an_unreachable_mongodb_is_named).
        read_preference: ReadPreference::Primary,
        collection_names: Default::default(),
        read_time_limit: Some(Duration::from_secs(5)),
    }
}

conformance!(
    insert_assigns_id_and_version,
    store_owned_fields_are_rejected,
    list_is_ordered_by_id_after_a_cursor,
    update_sets_fields_and_bumps_version,
    delete_respects_versions,
    idempotency_replays_and_detects_conflicts,
    concurrent_retries_with_one_key_create_one_document,
    concurrent_versioned_updates_apply_once,
    concurrent_writers_lose_nothing,
    legacy_documents_are_returned_as_stored_without_a_version,
    a_document_without_a_version_counts_as_version_one,
    import_is_idempotent_by_id,
    backfill_applies_only_at_the_version_it_was_judged_at,
);

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_data_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let store = SqliteStore::open(dir.path()).expect("open");
        id_of(&created(&store, "durable").await)
    };
    let store = SqliteStore::open(dir.path()).expect("reopen");
    assert_eq!(store.get(ORDERS, &id).await.expect("get").expect("doc")["product"], "durable");
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_data_and_indexes_survive_a_server_restart() {
    let mut server = MongoServer::start().expect("server");
    let id = id_of(&created(&mongo_store(&server.uri, "restart").await, "durable").await);
    server.restart().expect("restart");
    // Starting twice on an existing database is fine (indexes are idempotent).
    let store = mongo_store(&server.uri, "restart").await;
    assert_eq!(store.get(ORDERS, &id).await.expect("get").expect("doc")["product"], "durable");
}

/// Reads carry the store timeout to the server (`maxTimeMS`), so a query
/// the sidecar gave up on does not go on loading the database. Checked on
/// the wire, not by timing: how long a page query takes differs between
/// servers (SecantusDB scans where MongoDB walks the `_id` index; both stop
/// a query at its `maxTimeMS`).
#[tokio::test(flavor = "multi_thread")]
async fn mongodb_reads_carry_their_time_limit_to_the_server() {
    let server = MongoServer::start().expect("server");
    let upstream = format!("127.0.0.1:{}", server.port).parse().expect("address");
    for limit in [Some(Duration::from_millis(4321)), None] {
        let proxy = FaultProxy::start(upstream).await.expect("proxy");
        let uri = format!("mongodb://{}/?directConnection=true", proxy.address);
        let store = MongoStore::connect(&MongoSettings { read_time_limit: limit, ..mongo_settings(&uri, "time_limit") })
            .await
            .expect("connect");
        let id = id_of(&created(&store, "limited").await);
        store.get(ORDERS, &id).await.expect("get").expect("found");
        store.list(ORDERS, None, 10).await.expect("list");
        // BSON: type int32, key `maxTimeMS`, the value in milliseconds.
        let carried = proxy.sent_count(&[b"\x10maxTimeMS\0".as_slice(), &4321i32.to_le_bytes()].concat());
        assert_eq!(carried, if limit.is_some() { 2 } else { 0 }, "the get and the list, with {limit:?}");
    }
}

/// Read preference and write concern are typed (the CLI parses and names
/// them: tests/faults.rs); what is left to the store is a host that does not
/// answer, named without the credentials.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_mongodb_is_named_without_its_credentials() {
    let unreachable = MongoSettings {
        uri: "mongodb://admin:s3cret@127.0.0.1:1/?authSource=admin".into(),
        database: "x".into(),
        max_pool_size: 1,
        connect_timeout: Duration::from_millis(200),
        server_selection_timeout: Duration::from_millis(200),
        write_concern: Acknowledgment::Majority,
        read_preference: ReadPreference::SecondaryPreferred { options: None },
        collection_names: Default::default(),
        read_time_limit: None,
    };
    let error = MongoStore::connect(&unreachable).await.err().expect("unreachable").to_string();
    assert!(error.contains("127.0.0.1:1") && error.contains("ORDERS_MONGO_URI"), "{error}");
    assert!(!error.contains("s3cret"), "password leaked: {error}");
}

/// Each case once on a fresh SQLite backend (in a temporary directory) and
/// once on a fresh Redis server.
macro_rules! on_sqlite_and_redis {
    (sqlite: $sqlite:expr, redis: $redis:expr, cases: [$($case:ident),* $(,)?]) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    super::$case(Arc::new(($sqlite)(dir.path()))).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let server = RedisServer::start().expect("redis");
                    let client = ::redis::Client::open(server.url.as_str()).expect("client");
                    let connection = ::redis::aio::ConnectionManager::new(client).await.expect("connect");
                    super::$case(Arc::new(($redis)(connection))).await;
                }
            )*
        }
    };
}

// Job streams: the same cases on the embedded queue and on Redis Streams.

mod queues {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use orders_sidecar::queue::{AppendLimits, AppendOutcome, JobQueue};
    use orders_sidecar::queue::redis::RedisQueue;
    use orders_sidecar::queue::sqlite::SqliteQueue;
    use orders_testkit::services::RedisServer;
    use serde_json::json;

    async fn jobs_are_claimed_in_order_once_and_acknowledged(queue: Arc<dyn JobQueue>) {
        for n in 0..3 {
            queue.append("bundles", &json!({ "n": n })).await.expect("append");
        }
        assert_eq!(queue.depth("bundles").await.expect("depth"), 3);
        let first = queue.claim("bundles", "worker-1", 2, 60_000).await.expect("claim");
        assert_eq!(first.iter().map(|j| j.payload["n"].as_i64().unwrap_or(-1)).collect::<Vec<_>>(), vec![0, 1]);
        assert!(first.iter().all(|j| j.deliveries == 1));
        let second = queue.claim("bundles", "worker-2", 5, 60_000).await.expect("claim");
        assert_eq!(second.len(), 1);
        assert!(queue.claim("bundles", "worker-3", 5, 60_000).await.expect("claim").is_empty());
        let ids: Vec<String> = first.iter().map(|j| j.id.clone()).collect();
        assert_eq!(queue.ack("bundles", &ids).await.expect("ack"), 2);
        assert_eq!(queue.depth("bundles").await.expect("depth"), 1);
    }

    async fn a_job_whose_worker_died_is_claimed_again_after_min_idle(queue: Arc<dyn JobQueue>) {
        queue.append("bundles", &json!({ "job": "x" })).await.expect("append");
        let taken = queue.claim("bundles", "dies", 1, 200).await.expect("claim");
        assert_eq!(taken.len(), 1);
        assert!(queue.claim("bundles", "survivor", 1, 200).await.expect("claim").is_empty(), "claimed while still held");
        tokio::time::sleep(Duration::from_millis(350)).await;
        let retaken = queue.claim("bundles", "survivor", 1, 200).await.expect("claim");
        assert_eq!(retaken.len(), 1);
        assert_eq!(retaken[0].id, taken[0].id);
        assert_eq!(retaken[0].deliveries, 2);
        assert_eq!(retaken[0].payload, json!({ "job": "x" }));
    }

    async fn a_touched_job_stays_with_its_worker(queue: Arc<dyn JobQueue>) {
        queue.append("bundles", &json!({ "job": "long" })).await.expect("append");
        let taken = queue.claim("bundles", "busy", 1, 300).await.expect("claim");
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(queue.touch("bundles", "busy", &taken[0]).await.expect("touch"));
            assert!(queue.claim("bundles", "thief", 1, 300).await.expect("claim").is_empty(), "taken from a live worker");
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
        let retaken = queue.claim("bundles", "thief", 1, 300).await.expect("claim");
        assert_eq!(retaken.len(), 1, "once silent, the job moves on");
        assert_eq!(retaken[0].deliveries, 2, "touching does not count as a delivery");
    }

    async fn a_worker_whose_claim_was_taken_over_cannot_renew_it(queue: Arc<dyn JobQueue>) {
        queue
            .append("bundles", &json!({ "job": "contested" }))
            .await
            .expect("append");
        let first = queue
            .claim("bundles", "stalled", 1, 200)
            .await
            .expect("claim")
            .remove(0);
        assert!(
            queue
                .touch("bundles", "stalled", &first)
                .await
                .expect("touch"),
            "the holder renews its own claim"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        let second = queue
            .claim("bundles", "successor", 1, 200)
            .await
            .expect("claim")
            .remove(0);
        assert_eq!(
            (second.id.as_str(), second.deliveries),
            (first.id.as_str(), 2)
        );
        // The stalled worker wakes up: its heartbeat must not take the job back.
        for _ in 0..3 {
            assert!(
                !queue
                    .touch("bundles", "stalled", &first)
                    .await
                    .expect("touch"),
                "renewed a claim that was taken over"
            );
        }
        assert!(
            queue
                .touch("bundles", "successor", &second)
                .await
                .expect("touch")
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            queue
                .touch("bundles", "successor", &second)
                .await
                .expect("touch"),
            "the successor still holds it"
        );
        // Even under the successor's name, the older claim is fenced off.
        let stale = orders_sidecar::queue::Job {
            deliveries: 1,
            ..second.clone()
        };
        assert!(
            !queue
                .touch("bundles", "successor", &stale)
                .await
                .expect("touch")
        );
        queue
            .ack("bundles", std::slice::from_ref(&second.id))
            .await
            .expect("ack");
        assert!(
            !queue
                .touch("bundles", "successor", &second)
                .await
                .expect("touch"),
            "a finished job cannot be renewed"
        );
    }

    async fn bounded_appends_hold_the_limits_overall_and_per_key(queue: Arc<dyn JobQueue>) {
        let limits = |key| AppendLimits {
            max_queued: 5,
            per_key: Some((key, 2)),
        };
        let mut added = Vec::new();
        for key in ["a", "a"] {
            match queue
                .append_within("bundles", &json!({ "key": key }), &limits(key))
                .await
                .expect("append")
            {
                AppendOutcome::Added(id) => added.push(id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            queue
                .append_within("bundles", &json!({}), &limits("a"))
                .await
                .expect("append"),
            AppendOutcome::KeyFull
        );
        for key in ["b", "b", "c"] {
            assert!(matches!(
                queue
                    .append_within("bundles", &json!({}), &limits(key))
                    .await
                    .expect("append"),
                AppendOutcome::Added(_)
            ));
        }
        assert_eq!(
            queue
                .append_within("bundles", &json!({}), &limits("d"))
                .await
                .expect("append"),
            AppendOutcome::StreamFull
        );
        // A finished job (acknowledged, claimed or not) gives its key's share back.
        let claimed = queue.claim("bundles", "w", 1, 60_000).await.expect("claim");
        assert_eq!(claimed[0].id, added[0]);
        queue.ack("bundles", &added).await.expect("ack");
        assert!(matches!(
            queue
                .append_within("bundles", &json!({}), &limits("a"))
                .await
                .expect("append"),
            AppendOutcome::Added(_)
        ));
        assert!(matches!(
            queue
                .append_within("bundles", &json!({}), &limits("a"))
                .await
                .expect("append"),
            AppendOutcome::Added(_)
        ));
        assert_eq!(
            queue
                .append_within("bundles", &json!({}), &limits("a"))
                .await
                .expect("append"),
            AppendOutcome::StreamFull
        );
        assert_eq!(queue.depth("bundles").await.expect("depth"), 5);
        // Racing appends never overshoot.
        let racers: Vec<_> = (0..20)
            .map(|n| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let limits = AppendLimits {
                        max_queued: 12,
                        per_key: Some(("racer", 4)),
                    };
                    queue
                        .append_within("bundles", &json!({ "n": n }), &limits)
                        .await
                        .expect("append")
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.expect("join"));
        }
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, AppendOutcome::Added(_)))
                .count(),
            4,
            "{outcomes:?}"
        );
    }

    async fn concurrent_claimers_never_share_a_job(queue: Arc<dyn JobQueue>) {
        for n in 0..50 {
            queue.append("bundles", &json!({ "n": n })).await.expect("append");
        }
        let workers: Vec<_> = (0..5)
            .map(|w| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let jobs = queue.claim("bundles", &format!("w{w}"), 3, 60_000).await.expect("claim");
                        if jobs.is_empty() {
                            return mine;
                        }
                        mine.extend(jobs.into_iter().map(|j| j.id));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.expect("join"));
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!((all.len(), unique.len()), (50, 50));
    }

    on_sqlite_and_redis! {
        sqlite: |dir: &std::path::Path| SqliteQueue::open(dir).expect("open"),
        redis: |connection| RedisQueue::new(connection, "test"),
        cases: [
            jobs_are_claimed_in_order_once_and_acknowledged,
            a_job_whose_worker_died_is_claimed_again_after_min_idle,
            a_touched_job_stays_with_its_worker,
            a_worker_whose_claim_was_taken_over_cannot_renew_it,
            bounded_appends_hold_the_limits_overall_and_per_key,
            concurrent_claimers_never_share_a_job,
        ]
    }
}

// Event logs and one-time marks: the same cases on SQLite and on Redis.

mod events {
    use std::sync::Arc;
    use std::time::Duration;

    use orders_sidecar::events::redis::RedisEvents;
    use orders_sidecar::events::sqlite::SqliteEvents;
    use orders_sidecar::events::{EventLog, EventsError, Reservation};
    use orders_testkit::services::RedisServer;
    use serde_json::json;

    const TTL: Duration = Duration::from_secs(60);

    async fn events_are_read_in_order_after_any_id(log: Arc<dyn EventLog>) {
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(log.append("bundles", "b1", "progress", &json!({ "n": n }), TTL).await.expect("append"));
        }
        log.append("bundles", "other", "queued", &json!({}), TTL).await.expect("append");
        let all = log.read("bundles", "b1", None, 100).await.expect("read");
        assert_eq!(all.iter().map(|e| e.data["n"].as_i64().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(all.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
        let after = log.read("bundles", "b1", Some(&ids[1]), 2).await.expect("read");
        assert_eq!(after.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids[2..4]);
        assert!(log.read("bundles", "b1", Some(&ids[4]), 10).await.expect("read").is_empty());
        assert!(log.read("bundles", "nobody", None, 10).await.expect("read").is_empty());
        assert!(matches!(log.read("bundles", "b1", Some("not-an-id"), 10).await, Err(EventsError::BadId(_))));
    }

    async fn a_mark_is_taken_once_even_by_racing_callers(log: Arc<dyn EventLog>) {
        let racers: Vec<_> = (0..20)
            .map(|_| {
                let log = log.clone();
                tokio::spawn(async move { log.mark_once("download-x", TTL).await.expect("mark") })
            })
            .collect();
        let mut taken = 0;
        for racer in racers {
            taken += usize::from(racer.await.expect("join"));
        }
        assert_eq!(taken, 1);
        assert!(log.mark_once("download-y", TTL).await.expect("mark"), "marks are per key");
    }

    async fn a_reserved_mark_is_spent_by_delivery_not_by_attempt(log: Arc<dyn EventLog>) {
        let lease = Duration::from_secs(30);
        assert_eq!(
            log.reserve_mark("link", "first", lease)
                .await
                .expect("reserve"),
            Reservation::Granted
        );
        assert_eq!(
            log.reserve_mark("link", "second", lease)
                .await
                .expect("reserve"),
            Reservation::Busy,
            "held by another"
        );
        assert_eq!(
            log.reserve_mark("link", "first", lease)
                .await
                .expect("reserve"),
            Reservation::Granted,
            "renewed by its holder"
        );
        // The first attempt failed before any byte: the link is usable again.
        assert!(log.release_mark("link", "first").await.expect("release"));
        assert!(
            !log.release_mark("link", "first").await.expect("release"),
            "nothing left to release"
        );
        assert!(
            !log.spend_mark("link", "first", TTL).await.expect("spend"),
            "a released holder cannot spend"
        );
        assert_eq!(
            log.reserve_mark("link", "second", lease)
                .await
                .expect("reserve"),
            Reservation::Granted
        );
        assert!(log.spend_mark("link", "second", TTL).await.expect("spend"));
        assert_eq!(
            log.reserve_mark("link", "third", lease)
                .await
                .expect("reserve"),
            Reservation::Spent
        );
        assert!(
            !log.release_mark("link", "second").await.expect("release"),
            "a spent mark is not given back"
        );
        assert_eq!(
            log.reserve_mark("link", "second", lease)
                .await
                .expect("reserve"),
            Reservation::Granted,
            "the same delivery, retried"
        );
        assert!(
            !log.mark_once("link", TTL).await.expect("mark"),
            "spent for the one-step mark too"
        );
        // A lease that runs out (a dead instance) frees the mark.
        assert_eq!(
            log.reserve_mark("short", "dies", Duration::from_secs(1))
                .await
                .expect("reserve"),
            Reservation::Granted
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            log.reserve_mark("short", "next", lease)
                .await
                .expect("reserve"),
            Reservation::Granted
        );
        assert!(
            !log.spend_mark("short", "dies", TTL).await.expect("spend"),
            "the dead holder lost it"
        );
        // Racing reservations: exactly one holder.
        let racers: Vec<_> = (0..20)
            .map(|n| {
                let log = log.clone();
                tokio::spawn(async move {
                    log.reserve_mark("raced", &format!("h{n}"), lease)
                        .await
                        .expect("reserve")
                })
            })
            .collect();
        let mut granted = 0;
        for racer in racers {
            granted += usize::from(racer.await.expect("join") == Reservation::Granted);
        }
        assert_eq!(granted, 1);
    }

    async fn marks_and_logs_expire(log: Arc<dyn EventLog>) {
        assert!(log.mark_once("short", Duration::from_secs(1)).await.expect("mark"));
        log.append("bundles", "brief", "queued", &json!({}), Duration::from_secs(1)).await.expect("append");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        log.remove_expired().await.expect("sweep");
        assert!(log.mark_once("short", TTL).await.expect("mark"), "an expired mark can be taken again");
        assert!(log.read("bundles", "brief", None, 10).await.expect("read").is_empty(), "an expired log is gone");
    }

    on_sqlite_and_redis! {
        sqlite: |dir: &std::path::Path| SqliteEvents::open(dir).expect("open"),
        redis: |connection| RedisEvents::new(connection, "test"),
        cases: [
            events_are_read_in_order_after_any_id,
            a_mark_is_taken_once_even_by_racing_callers,
            a_reserved_mark_is_spent_by_delivery_not_by_attempt,
            marks_and_logs_expire,
        ]
    }
}

// ---- API keys and the audit trail: one suite, both stores ----

mod keys {
    use std::sync::Arc;

    use orders_access::Scope;
    use orders_sidecar::auth::api_key::{create_key, hash_key};
    use orders_sidecar::store::keys::mongo::MongoKeys;
    use orders_sidecar::store::keys::sqlite::SqliteKeys;
    use orders_sidecar::store::keys::{AuditEntry, KeyStore, Revoked};
    use orders_testkit::services::MongoServer;

    macro_rules! on_both_key_stores {
        ($($case:ident),* $(,)?) => {
            mod sqlite {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread")]
                    async fn $case() {
                        let dir = tempfile::tempdir().expect("tempdir");
                        super::$case(Arc::new(SqliteKeys::open(dir.path()).expect("open"))).await;
                    }
                )*
            }
            mod mongodb {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread")]
                    async fn $case() {
                        let server = MongoServer::start().expect("MongoDB-wire server");
                        let store = super::super::mongo_store(&server.uri, stringify!($case)).await;
                        super::$case(Arc::new(MongoKeys::open(store.database().clone()).await.expect("keys"))).await;
                    }
                )*
            }
        };
    }

    async fn a_key_is_found_by_the_hash_of_its_text_only(keys: Arc<dyn KeyStore>) {
        let created = create_key(&*keys, "ci", vec![Scope::OrdersRead, Scope::Bundles], Some(25), "cli").await.expect("create");
        let found = keys.key_by_hash(&hash_key(&created.text)).await.expect("lookup").expect("found");
        assert_eq!(found, created.record);
        assert_eq!((found.scopes.clone(), found.rate_limit), (vec![Scope::OrdersRead, Scope::Bundles], Some(25)));
        assert_ne!(found.hash, created.text);
        assert_eq!(keys.key_by_hash(&hash_key("ordk_other")).await.expect("lookup"), None);
        assert_eq!(keys.key_by_hash(&created.text).await.expect("lookup"), None, "the text itself is not a lookup key");
    }

    async fn names_are_unique_among_active_keys(keys: Arc<dyn KeyStore>) {
        let first = create_key(&*keys, "deploy", vec![Scope::Admin], None, "cli").await.expect("create");
        assert!(create_key(&*keys, "deploy", vec![Scope::OrdersRead], None, "cli").await.is_err());
        assert!(matches!(keys.revoke_key("deploy", 5).await.expect("revoke"), Revoked::Done(k) if k.id == first.record.id && k.revoked_ms == Some(5)));
        let second = create_key(&*keys, "deploy", vec![Scope::OrdersRead], None, "cli").await.expect("the name is free again");
        let mut listed: Vec<(String, bool)> = keys.list_keys().await.expect("list").iter().map(|k| (k.id.clone(), k.is_revoked())).collect();
        listed.sort();
        let mut expected = vec![(first.record.id.clone(), true), (second.record.id.clone(), false)];
        expected.sort();
        assert_eq!(listed, expected);
        // Revoking by name finds the active one; by id, either; twice is harmless.
        assert!(matches!(keys.revoke_key(&second.record.id, 9).await.expect("revoke"), Revoked::Done(_)));
        assert!(matches!(keys.revoke_key(&second.record.id, 11).await.expect("revoke"), Revoked::Done(k) if k.revoked_ms == Some(9)));
        assert_eq!(keys.revoke_key("deploy", 12).await.expect("revoke"), Revoked::NotFound);
        assert_eq!(keys.revoke_key("nobody", 12).await.expect("revoke"), Revoked::NotFound);
        let revoked = keys.key_by_hash(&hash_key(&second.text)).await.expect("lookup").expect("still stored");
        assert!(revoked.is_revoked());
    }

    async fn use_is_recorded(keys: Arc<dyn KeyStore>) {
        let created = create_key(&*keys, "touched", vec![Scope::OrdersRead], None, "cli").await.expect("create");
        assert_eq!(created.record.last_used_ms, None);
        keys.touch_key(&created.record.id, 1234).await.expect("touch");
        assert_eq!(keys.key_by_hash(&created.record.hash).await.expect("lookup").expect("key").last_used_ms, Some(1234));
    }

    async fn the_audit_trail_is_read_in_order_from_a_time(keys: Arc<dyn KeyStore>) {
        let entry = |at_ms, target: &str| AuditEntry {
            at_ms,
            actor: "key:key_1".into(),
            operation: "order.update".into(),
            target: Some(target.into()),
            status: 200,
            request_id: (target != "d").then(|| format!("req-{target}")),
        };
        // One alone, two in one batch (kept in their order), none, one more.
        keys.append_audit(&[entry(100, "a")]).await.expect("append");
        keys.append_audit(&[entry(200, "b"), entry(200, "c")]).await.expect("append");
        keys.append_audit(&[]).await.expect("append nothing");
        keys.append_audit(&[entry(300, "d")]).await.expect("append");
        let targets = |entries: Vec<AuditEntry>| entries.into_iter().map(|e| e.target.unwrap_or_default()).collect::<Vec<_>>();
        assert_eq!(targets(keys.audit_since(0, 100).await.expect("read")), ["a", "b", "c", "d"]);
        assert_eq!(targets(keys.audit_since(200, 100).await.expect("read")), ["b", "c", "d"]);
        assert_eq!(targets(keys.audit_since(0, 2).await.expect("read")), ["a", "b"]);
        let last = keys.audit_since(300, 1).await.expect("read").pop().expect("entry");
        assert_eq!((last.request_id, last.status, last.actor.as_str()), (None, 200, "key:key_1"));
    }

    on_both_key_stores!(
        a_key_is_found_by_the_hash_of_its_text_only,
        names_are_unique_among_active_keys,
        use_is_recorded,
        the_audit_trail_is_read_in_order_from_a_time,
    );
}
