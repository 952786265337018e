//! The contract suite against the product as `orders up` starts it: on the
//! embedded defaults, and on MongoDB (the server the fixture starts) + Redis.

use orders_testkit::contract;
use orders_testkit::product::{Backends, Product};
use orders_testkit::services::{MongoServer, RedisServer};

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

#[tokio::test(flavor = "multi_thread")]
async fn contract_passes_on_embedded_defaults() {
    let product = Product::up(ORDERS, &Backends::default()).expect("orders up");
    let checks = contract::run(&product.api()).await;
    assert!(checks >= 150, "only {checks} checks ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn contract_passes_on_mongodb_and_redis() {
    let mongo = MongoServer::start().expect("MongoDB-wire server");
    let redis = RedisServer::start().expect("redis");
    let backends = Backends {
        mongo_uri: Some(mongo.uri.clone()),
        mongo_database: Some("contract".into()),
        redis_url: Some(redis.url.clone()),
        ..Backends::default()
    };
    let product = Product::up(ORDERS, &backends).expect("orders up on MongoDB + Redis");
    let checks = contract::run(&product.api()).await;
    assert!(checks >= 150, "only {checks} checks ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_fills_the_store_through_the_api() {
    let product = Product::up(ORDERS, &Backends::default()).expect("orders up");
    let output = std::process::Command::new(ORDERS)
        .args(["seed", "120", "--url", &product.url])
        .env("ORDERS_API_KEY", product.admin_key.as_deref().expect("admin key"))
        .output()
        .expect("orders seed");
    assert!(output.status.success(), "{output:?}");
    let page = product.api().get("/orders?limit=1000").await;
    let orders = page.body["orders"].as_array().cloned().unwrap_or_default();
    assert_eq!(orders.len(), 120);
    assert!(orders.iter().all(|o| o["quantity"].as_i64().is_some_and(|q| (1..=500).contains(&q))));
}
