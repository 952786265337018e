//! The contract suite against the product as `orders up` starts it: on the
//! embedded defaults, and on MongoDB (the server the fixture starts) + Redis.

use orders_testkit::contract;
use reqwest::Method;
use orders_testkit::product::{Backends, Product};
use orders_testkit::services::{MongoServer, RedisServer};

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

#[tokio::test(flavor = "multi_thread")]
async fn contract_passes_on_embedded_defaults() {
    let product = Product::up(ORDERS, &Backends::default()).expect("orders up");
    let checks = contract::run(&product.api()).await;
    assert!(checks >= 150, "only {checks} checks ran");
}

/// The same contract with the runner's method routing off: every `/orders`
/// request goes through the orders router component and service chaining,
/// the path Spin takes.
#[tokio::test(flavor = "multi_thread")]
async fn contract_passes_through_the_router() {
    let backends = Backends { extra_env: vec![("ORDERS_ROUTING".into(), "router".into())], ..Backends::default() };
    let product = Product::up(ORDERS, &backends).expect("orders up --routing router");
    let checks = contract::run(&product.api()).await;
    assert!(checks >= 150, "only {checks} checks ran");
}

/// Which instances one request makes on each path: routed by method, one
/// (the endpoint's); through the router, two (router and endpoint). A
/// method no tool table names still reaches the router, which answers 405.
#[tokio::test(flavor = "multi_thread")]
async fn the_runner_routes_by_method_in_one_instance() {
    for (routing, router_instances) in [("method", 0), ("router", 1)] {
        let backends = Backends { extra_env: vec![("ORDERS_ROUTING".into(), routing.into())], ..Backends::default() };
        let product = Product::up(ORDERS, &backends).expect("orders up");
        let api = product.api();
        let created = api.create(&contract::sample_order("routing")).await;
        let id = created.body["order"]["_id"].as_str().expect("created order id").to_owned();
        let before = instantiations(&api).await;
        let got = api.send(Method::GET, &format!("/orders/{id}"), &[("x-request-id", "routing-1")], None).await;
        assert_eq!(got.status, 200, "{routing}: {:?}", got.body);
        assert_eq!(got.header("x-request-id"), Some("routing-1"), "{routing}: the request id is echoed on both paths");
        let after = instantiations(&api).await;
        assert_eq!(after("orders-get") - before("orders-get"), 1, "{routing}");
        assert_eq!(after("orders-router") - before("orders-router"), router_instances, "{routing}");

        let refused = api.send(Method::PATCH, &format!("/orders/{id}"), &[], None).await;
        assert_eq!(refused.status, 405, "{routing}");
        assert_eq!(refused.header("allow"), Some("GET, PUT, DELETE"), "{routing}");
        assert_eq!(instantiations(&api).await("orders-router") - after("orders-router"), 1, "{routing}: 405 from the router");
    }
}

/// Instances made so far, by function, from the runner's `/metrics`.
async fn instantiations(api: &contract::Api) -> impl Fn(&str) -> u64 {
    let text = api.client.get(format!("{}/metrics", api.base)).send().await.expect("/metrics").text().await.expect("metrics text");
    move |function: &str| {
        let prefix = format!("orders_component_instantiation_seconds_count{{function=\"{function}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |count| count.trim().parse().expect("a count"))
    }
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
