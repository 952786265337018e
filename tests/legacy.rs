//! Day one on the old database: the documents the Flask service wrote (its
//! POST stored four unchecked values, its PUT nulled what it was not sent,
//! clients added fields, BSON types JSON lacks) are served by list and get
//! without a 503 or a 500, take If-Match and updates, are reported and
//! repaired by `orders migrate`, and move between MongoDB and the embedded
//! store with `orders export` / `orders import` — on both stores alike.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bson::{Bson, Document, doc, oid::ObjectId};
use orders_testkit::contract::Api;
use orders_testkit::openapi::schema_errors;
use orders_testkit::product::{Backends, Product};
use orders_testkit::repo_root;
use orders_testkit::services::{MongoServer, RedisServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

/// A legacy document by what it stands for.
struct Legacy {
    name: &'static str,
    fields: Document,
}

fn legacy_documents() -> Vec<Legacy> {
    let decimal = |text: &str| Bson::try_from(json!({ "$numberDecimal": text })).expect("decimal");
    vec![
        // What the old POST stored: the four fields, quantity an int32 as pymongo writes it.
        Legacy {
            name: "post",
            fields: doc! { "product": "Spring banner", "quantity": 3_i32, "customer_name": "Ada", "customer_address": "1 Main St" },
        },
        // What the old PUT left after `{"product": …}`: the other three nulled.
        Legacy {
            name: "put_nulls",
            fields: doc! { "product": "Banner", "quantity": Bson::Null, "customer_name": Bson::Null, "customer_address": Bson::Null },
        },
        Legacy {
            name: "string_quantity",
            fields: doc! { "product": "Logo", "quantity": "7", "customer_name": "Grace", "customer_address": "2 Elm Ave" },
        },
        Legacy {
            name: "float_quantity",
            fields: doc! { "product": "Header", "quantity": 2.5, "customer_name": "Alan", "customer_address": "3 King's Way" },
        },
        Legacy {
            name: "integral_float",
            fields: doc! { "product": "Footer", "quantity": 4.0, "customer_name": "Linus", "customer_address": "4 Market St" },
        },
        Legacy {
            name: "odd_types",
            fields: doc! { "product": "x".repeat(20_000), "quantity": true, "customer_name": { "first": "Radia" }, "customer_address": ["5 Harbour Rd"], "coupon": "SPRING" },
        },
        Legacy {
            name: "missing_fields",
            fields: doc! { "product": "Only a product" },
        },
        Legacy {
            name: "bson_types",
            fields: doc! {
                "product": "Decimal", "quantity": decimal("5"), "customer_name": "Ken", "customer_address": "6 Rue de la Paix",
                "created_at": bson::DateTime::from_millis(1_705_094_243_000),
                "attachment": Bson::Binary(bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] }),
                "ref": ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").expect("oid"),
            },
        },
    ]
}

fn orders_command(args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(ORDERS);
    command
        .current_dir(repo_root())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("ORDERS_LOG", "warn");
    for (name, _) in
        std::env::vars().filter(|(name, _)| name.starts_with("ORDERS_") && name != "ORDERS_LOG")
    {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command
}

/// Runs an `orders` store command to success; its standard output.
fn orders(args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> String {
    let output = orders_command(args, data_dir, env)
        .output()
        .expect("run orders");
    assert!(
        output.status.success(),
        "orders {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn migrate(data_dir: &Path, env: &[(&str, &str)], apply: bool) -> Value {
    let mut args = vec!["migrate", "--json"];
    if apply {
        args.push("--apply");
    }
    serde_json::from_str(&orders(&args, data_dir, env)).expect("migrate --json prints JSON")
}

fn ids_of(report: &Value, category: &str) -> Vec<String> {
    let mut ids: Vec<String> = report[category]["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Every order the API serves, following `next` pages of two.
async fn list_all(api: &Api) -> Vec<Value> {
    let mut orders = Vec::new();
    let mut path = "/orders?limit=2".to_owned();
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {:?}", page.body);
        orders.extend(
            page.body["orders"]
                .as_array()
                .expect("orders")
                .iter()
                .cloned(),
        );
        match page.body["next"].as_str() {
            Some(next) => path = format!("/orders?limit=2&after={next}"),
            None => return orders,
        }
    }
}

/// What every deployment must do with the legacy documents `ids` (by name).
async fn serves_and_updates_legacy_orders(api: &Api, ids: &BTreeMap<&'static str, String>) {
    let listed = list_all(api).await;
    let listed_ids: Vec<&str> = listed
        .iter()
        .map(|order| order["_id"].as_str().unwrap())
        .collect();
    for id in ids.values() {
        assert!(listed_ids.contains(&id.as_str()), "{id} listed");
    }
    let whole = api.get("/orders?limit=1000").await;
    assert_eq!(
        whole.status,
        StatusCode::OK,
        "one page holding every odd document: {:?}",
        whole.body
    );

    let document = api.get("/openapi.json").await.body;
    let errors = schema_errors(&document, "/orders", "get", 200, &whole.body);
    assert!(
        errors.is_empty(),
        "a page of legacy orders matches the OpenAPI document: {errors:?}"
    );
    for (name, id) in ids {
        let got = api.get(&format!("/orders/{id}")).await;
        assert_eq!(got.status, StatusCode::OK, "{name}: {:?}", got.body);
        let errors = schema_errors(&document, "/orders/{id}", "get", 200, &got.body);
        assert!(
            errors.is_empty(),
            "{name} matches the OpenAPI document: {errors:?}"
        );
        let order = &got.body["order"];
        assert_eq!(order["version"], 1, "{name}: version 1 when none is stored");
        assert_eq!(got.header("etag"), Some("\"1\""), "{name}");
        assert!(
            order["created_at"].is_string() || order["created_at"].is_object(),
            "{name}: {order}"
        );
    }
    let post = &api.get(&format!("/orders/{}", ids["post"])).await.body["order"];
    let created_secs = i64::from_str_radix(&ids["post"][..8], 16).unwrap();
    assert_eq!(
        post["created_at"],
        orders_contract::time::format_unix_millis(created_secs * 1000),
        "created_at from the ObjectId"
    );
    assert_eq!(post["updated_at"], post["created_at"]);
    assert!(
        post.get("contract_problems").is_none(),
        "an order the old POST stored meets the contract: {post}"
    );

    let string_quantity = &api
        .get(&format!("/orders/{}", ids["string_quantity"]))
        .await
        .body["order"];
    assert_eq!(string_quantity["quantity"], "7", "served as stored");
    assert_eq!(
        string_quantity["contract_problems"],
        json!([{"field": "quantity", "problem": "must be an integer between 1 and 1000000"}])
    );

    let odd = &api.get(&format!("/orders/{}", ids["odd_types"])).await.body["order"];
    assert_eq!(odd["customer_name"], json!({"first": "Radia"}));
    assert_eq!(odd["coupon"], "SPRING", "unknown fields are kept");
    assert_eq!(odd["product"].as_str().map(str::len), Some(20_000));
    let fields: Vec<&str> = odd["contract_problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "product",
            "quantity",
            "customer_name",
            "customer_address",
            "coupon"
        ]
    );

    let bson_types = &api
        .get(&format!("/orders/{}", ids["bson_types"]))
        .await
        .body["order"];
    assert_eq!(
        bson_types["quantity"],
        json!({"$numberDecimal": "5"}),
        "Extended JSON for what JSON lacks"
    );
    assert!(
        bson_types["created_at"]["$date"].is_string(),
        "{bson_types}"
    );

    // If-Match "1" applies to a document stored without a version, once.
    let path = format!("/orders/{}", ids["post"]);
    let updated = api
        .json(
            Method::PUT,
            &path,
            &json!({"quantity": 9}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["order"]["version"], 2);
    assert_eq!(updated.header("etag"), Some("\"2\""));
    let stale = api
        .json(
            Method::PUT,
            &path,
            &json!({"quantity": 10}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);

    // An update validates what it is sent and keeps the rest as stored.
    let path = format!("/orders/{}", ids["put_nulls"]);
    let bad = api
        .json(Method::PUT, &path, &json!({"quantity": "5"}), &[])
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let healed = api
        .json(
            Method::PUT,
            &path,
            &json!({"quantity": 5, "customer_name": "Barbara"}),
            &[],
        )
        .await;
    assert_eq!(healed.status, StatusCode::OK, "{:?}", healed.body);
    let order = &healed.body["order"];
    assert_eq!(
        (
            order["quantity"].clone(),
            order["customer_name"].clone(),
            order["product"].clone()
        ),
        (json!(5), json!("Barbara"), json!("Banner"))
    );
    assert_eq!(
        order["customer_address"],
        Value::Null,
        "a field not sent keeps its stored null"
    );
    assert_eq!(order["version"], 2);
    assert_eq!(
        order["contract_problems"],
        json!([{"field": "customer_address", "problem": "must be a string of 1 to 500 characters"}])
    );
    let healed = api
        .json(
            Method::PUT,
            &path,
            &json!({"customer_address": "7 Calle Mayor"}),
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(healed.status, StatusCode::OK);
    assert!(
        healed.body["order"].get("contract_problems").is_none(),
        "every field now meets the contract: {:?}",
        healed.body
    );

    let deleted = api
        .send(
            Method::DELETE,
            &format!("/orders/{}", ids["missing_fields"]),
            &[("if-match", "\"1\"")],
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);

    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: f64 = metrics
        .lines()
        .find(|line| {
            line.starts_with("orders_nonconforming_documents_served_total{collection=\"orders\"}")
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(served >= 5.0, "odd documents are counted: {served}");
}

/// The names of the documents `migrate` should put in each category, given
/// what the API test above changed (post healed to a backfill of timestamps,
/// put_nulls fully healed, missing_fields deleted).
fn expected_after_api(ids: &BTreeMap<&'static str, String>) -> (Vec<String>, Vec<String>) {
    let mut backfill: Vec<String> = ["post", "string_quantity", "integral_float", "put_nulls"]
        .iter()
        .map(|name| ids[name].clone())
        .collect();
    let mut person: Vec<String> = ["float_quantity", "odd_types", "bson_types"]
        .iter()
        .map(|name| ids[name].clone())
        .collect();
    backfill.sort();
    person.sort();
    (backfill, person)
}

fn migrates_exactly_what_it_finds(
    data_dir: &Path,
    env: &[(&str, &str)],
    ids: &BTreeMap<&'static str, String>,
    foreign_ids: u64,
) {
    let (backfill, person) = expected_after_api(ids);
    let report = migrate(data_dir, env, false);
    assert_eq!(report["scanned"], 7, "{report:#}");
    assert_eq!(report["foreign_ids"], foreign_ids);
    assert_eq!(report["meet_contract"], 0);
    assert_eq!(ids_of(&report, "need_backfill"), backfill, "{report:#}");
    assert_eq!(ids_of(&report, "need_a_person"), person, "{report:#}");
    assert_eq!(report["repaired"], 0, "a dry run writes nothing");
    assert_eq!(
        migrate(data_dir, env, false)["need_backfill"]["count"],
        4,
        "still nothing written"
    );

    let applied = migrate(data_dir, env, true);
    assert_eq!(
        applied["repaired"], 7,
        "every document had a lossless part: {applied:#}"
    );
    let again = migrate(data_dir, env, true);
    assert_eq!(again["repaired"], 0, "idempotent: {again:#}");
    assert_eq!(again["meet_contract"], 4);
    assert_eq!(
        ids_of(&again, "need_a_person"),
        person,
        "what needs a person is left as stored"
    );
    assert_eq!(again["need_backfill"]["count"], 0);
}

async fn served_after_migration(api: &Api, ids: &BTreeMap<&'static str, String>) {
    let order = &api
        .get(&format!("/orders/{}", ids["string_quantity"]))
        .await
        .body["order"];
    assert_eq!(order["quantity"], 7, "\"7\" became 7");
    assert_eq!(order["version"], 2, "a change clients see moves the ETag");
    assert!(order.get("contract_problems").is_none());
    let order = &api
        .get(&format!("/orders/{}", ids["float_quantity"]))
        .await
        .body["order"];
    assert_eq!(order["quantity"], 2.5, "never guessed");
    assert_eq!(order["version"], 1, "only invisible backfills: same ETag");
    let order = &api
        .get(&format!("/orders/{}", ids["bson_types"]))
        .await
        .body["order"];
    assert_eq!(
        order["created_at"], "2024-01-12T21:17:23Z",
        "BSON date → RFC 3339"
    );
}

/// Lines of an export keyed by `_id`, as parsed JSON.
fn export_by_id(text: &str) -> BTreeMap<String, Value> {
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("JSON line");
            (
                value["_id"]["$oid"].as_str().expect("$oid").to_owned(),
                value,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_documents_on_mongodb_are_served_migrated_and_exported() {
    let mongo = MongoServer::start().expect("MongoDB-wire server");
    let database = "legacy_orders_db";
    let client = mongodb::Client::with_uri_str(&mongo.uri)
        .await
        .expect("client");
    let collection = client.database(database).collection::<Document>("orders");
    let mut ids = BTreeMap::new();
    for legacy in legacy_documents() {
        let id = ObjectId::new();
        let mut document = doc! { "_id": id };
        document.extend(legacy.fields);
        collection
            .insert_one(document)
            .await
            .expect("insert legacy document");
        ids.insert(legacy.name, id.to_hex());
    }
    // The API cannot name an id that is not an ObjectId; migrate counts it.
    collection
        .insert_one(doc! { "_id": "legacy-1", "product": "foreign id" })
        .await
        .expect("insert");

    // Redis as in production: `migrate --apply` drops the cached copies of
    // what it rewrites, so the running service serves the repaired forms.
    let redis = RedisServer::start().expect("redis");
    let data_dir = tempfile::tempdir().expect("data dir");
    let env = [
        ("ORDERS_MONGO_URI", mongo.uri.as_str()),
        ("ORDERS_MONGO_DATABASE", database),
        ("ORDERS_REDIS_URL", redis.url.as_str()),
    ];
    let backends = Backends {
        mongo_uri: Some(mongo.uri.clone()),
        mongo_database: Some(database.into()),
        redis_url: Some(redis.url.clone()),
        ..Backends::default()
    };
    let product = Product::up(ORDERS, &backends).expect("orders up on the old database");
    let api = product.api();
    serves_and_updates_legacy_orders(&api, &ids).await;

    migrates_exactly_what_it_finds(data_dir.path(), &env, &ids, 1);
    served_after_migration(&api, &ids).await;
    let stored = collection
        .find_one(doc! { "_id": ObjectId::parse_str(&ids["string_quantity"]).unwrap() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored
            .get("quantity")
            .and_then(Bson::as_i64)
            .or_else(|| stored.get_i32("quantity").ok().map(i64::from)),
        Some(7)
    );
    assert!(
        stored.get_str("created_at").is_ok(),
        "timestamps written: {stored}"
    );
    assert!(
        collection
            .find_one(doc! { "_id": "legacy-1" })
            .await
            .unwrap()
            .is_some(),
        "nothing deleted"
    );

    // Export, import into a fresh embedded store, export again: same documents.
    let exported = orders(&["export"], data_dir.path(), &env);
    assert_eq!(exported.lines().count(), 7);
    let file = data_dir.path().join("orders.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let embedded = tempfile::tempdir().expect("embedded data dir");
    let first = orders(&["import", file.to_str().unwrap()], embedded.path(), &[]);
    assert!(first.contains(": 7 new, 0 already there unchanged, 0 already there with other content (kept), 0 lines skipped"), "{first}");
    let second = orders(&["import", file.to_str().unwrap()], embedded.path(), &[]);
    assert!(
        second.contains(": 0 new, 7 already there unchanged"),
        "idempotent by _id: {second}"
    );
    let round_trip = orders(&["export"], embedded.path(), &[]);
    assert_eq!(
        export_by_id(&round_trip),
        export_by_id(&exported),
        "same ids, fields and values"
    );

    // And back into another MongoDB database: the same again.
    let env_back = [
        ("ORDERS_MONGO_URI", mongo.uri.as_str()),
        ("ORDERS_MONGO_DATABASE", "round_trip_db"),
    ];
    let back = orders(
        &["import", file.to_str().unwrap()],
        data_dir.path(),
        &env_back,
    );
    assert!(back.contains(": 7 new"), "{back}");
    assert_eq!(
        export_by_id(&orders(&["export"], data_dir.path(), &env_back)),
        export_by_id(&exported)
    );
}

/// The same documents, as `mongoexport` of the old collection writes them.
fn mongoexport_of_legacy_documents() -> (String, BTreeMap<&'static str, String>) {
    let mut ids = BTreeMap::new();
    let mut text = String::new();
    for legacy in legacy_documents() {
        let id = ObjectId::new();
        let mut document = doc! { "_id": id };
        document.extend(legacy.fields);
        text.push_str(&Bson::Document(document).into_relaxed_extjson().to_string());
        text.push('\n');
        ids.insert(legacy.name, id.to_hex());
    }
    text.push_str("{\"_id\": \"legacy-1\", \"product\": \"foreign id\"}\nnot json\n\n");
    (text, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_documents_imported_into_the_embedded_store_behave_the_same() {
    let (file_text, ids) = mongoexport_of_legacy_documents();
    let data_dir = tempfile::tempdir().expect("data dir");
    let file = data_dir.path().join("old-orders.jsonl");
    std::fs::write(&file, file_text).unwrap();
    let summary = orders(&["import", file.to_str().unwrap()], data_dir.path(), &[]);
    assert!(summary.contains(": 8 new, 0 already there unchanged, 0 already there with other content (kept), 2 lines skipped"), "{summary}");
    assert!(
        summary.contains("line 9: _id \"legacy-1\" is not an ObjectId"),
        "{summary}"
    );
    assert!(summary.contains("line 10: not JSON"), "{summary}");

    let mut product = Product::up_in(ORDERS, &Backends::default(), data_dir.path(), "127.0.0.1:0")
        .expect("orders up");
    let api = product.api();
    serves_and_updates_legacy_orders(&api, &ids).await;
    product.process.stop();

    // With the service stopped, so no in-process cache holds the old forms.
    migrates_exactly_what_it_finds(data_dir.path(), &[], &ids, 0);
    let product = Product::up_in(ORDERS, &Backends::default(), data_dir.path(), "127.0.0.1:0")
        .expect("orders up again");
    served_after_migration(&product.api(), &ids).await;

    // A re-import keeps what the API and the migration changed, and brings
    // back only the order deleted through the API (idempotent by `_id`).
    let again = orders(&["import", file.to_str().unwrap()], data_dir.path(), &[]);
    assert!(
        again.contains(
            ": 1 new, 0 already there unchanged, 7 already there with other content (kept)"
        ),
        "{again}"
    );
}
