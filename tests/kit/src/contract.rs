//! The contract suite of `../shared/spec/orders-api.md`: every row checked
//! over HTTP against a base URL, so the same suite runs against `orders up`
//! (embedded or MongoDB + Redis), a cluster behind nginx, or `spin up`.

use std::collections::HashSet;

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use orders_vocabulary::id::is_object_id;
use serde_json::{Value, json};

use crate::checks::Checks;

/// One answer: status, headers and the body parsed as JSON (Null if not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub content_type: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: Client,
    /// The API key every request carries, if any.
    pub key: Option<String>,
}

/// An HTTP client whose every request carries `Authorization: Bearer <key>`
/// and ends after `timeout` (none for streams that are followed for longer).
pub fn client_with_key(key: Option<&str>, timeout: Option<std::time::Duration>) -> Client {
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        headers.insert("authorization", format!("Bearer {key}").parse().expect("a key is a valid header value"));
    }
    let mut builder = Client::builder().default_headers(headers);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().expect("http client")
}

const REQUEST_TIMEOUT: Option<std::time::Duration> = Some(std::time::Duration::from_secs(30));

impl Api {
    /// A client without a credential (public routes, refusals).
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), client: client_with_key(None, REQUEST_TIMEOUT), key: None }
    }

    /// A client that sends `key` with every request.
    pub fn with_key(base: &str, key: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), client: client_with_key(Some(key), REQUEST_TIMEOUT), key: Some(key.to_owned()) }
    }

    /// The same service without the credential.
    pub fn anonymous(&self) -> Self {
        Self::new(&self.base)
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e:?}"));
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = response.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, body, content_type }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn json(&self, method: Method, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(method, path, &all, Some(body.to_string().into_bytes())).await
    }

    pub async fn create(&self, order: &Value) -> Answer {
        self.json(Method::POST, "/orders", order, &[]).await
    }
}

pub fn sample_order(tag: &str) -> Value {
    json!({
        "product": format!("  Banner {tag}  "),
        "quantity": 3,
        "customer_name": "Ada Lovelace",
        "customer_address": "12 Analytical Engine Road, London",
    })
}

const MISSING_ID: &str = "0123456789abcdef01234567";

fn is_rfc3339_utc(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T')
}

fn error_fields(answer: &Answer) -> Vec<&str> {
    answer.body["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

fn has_message(answer: &Answer) -> bool {
    answer.content_type.starts_with("application/json") && answer.body["message"].as_str().is_some_and(|m| !m.is_empty())
}

/// Runs every check with `api`'s credential (an admin key, or none when the
/// service runs with `--auth off`); panics listing all failures; returns the count.
pub async fn run(api: &Api) -> usize {
    let api = api.clone();
    let mut c = Checks::default();
    let tag = format!("{:x}", std::process::id() as u64 * 1_000_003 + rand_suffix());
    create_and_read(&api, &mut c, &tag).await;
    validation(&api, &mut c).await;
    media_type_and_size(&api, &mut c).await;
    updates(&api, &mut c, &tag).await;
    deletes(&api, &mut c, &tag).await;
    routing(&api, &mut c).await;
    idempotency(&api, &mut c, &tag).await;
    pagination(&api, &mut c, &tag).await;
    service_endpoints(&api, &mut c).await;
    if api.key.is_some() {
        access(&api, &mut c).await;
    }
    crate::openapi::check_against_service(&api, &mut c).await;
    c.finish("orders contract")
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

async fn create_and_read(api: &Api, c: &mut Checks, tag: &str) {
    let created = api.create(&sample_order(tag)).await;
    c.eq("create: status 201", created.status, StatusCode::CREATED);
    c.eq("create: message", created.body["message"].as_str(), Some("Order created successfully"));
    let order = &created.body["order"];
    let id = order["_id"].as_str().unwrap_or_default().to_owned();
    c.check("create: _id is 24 lowercase hex", is_object_id(&id), &id);
    c.eq("create: Location header", created.header("location").map(str::to_owned), Some(format!("/orders/{id}")));
    c.eq("create: ETag is the version", created.header("etag"), Some("\"1\""));
    c.eq("create: product trimmed", order["product"].as_str().map(str::to_owned), Some(format!("Banner {tag}")));
    c.eq("create: version 1", order["version"].as_i64(), Some(1));
    c.check("create: created_at RFC 3339 UTC", is_rfc3339_utc(&order["created_at"]), &order["created_at"]);
    c.eq("create: updated_at equals created_at", &order["updated_at"], &order["created_at"]);
    let keys: Vec<&str> = order.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    let mut sorted = keys.clone();
    sorted.sort();
    c.eq("create: exactly the order fields", sorted, vec!["_id", "created_at", "customer_address", "customer_name", "product", "quantity", "updated_at", "version"]);

    let read = api.get(&format!("/orders/{id}")).await;
    c.eq("get: status 200", read.status, StatusCode::OK);
    c.eq("get: same order", &read.body["order"], order);
    c.eq("get: ETag", read.header("etag"), Some("\"1\""));
    let upper = api.get(&format!("/orders/{}", id.to_ascii_uppercase())).await;
    c.eq("get: id in upper case finds the order", upper.status, StatusCode::OK);

    let missing = api.get(&format!("/orders/{MISSING_ID}")).await;
    c.eq("get unknown: 404", missing.status, StatusCode::NOT_FOUND);
    c.eq("get unknown: message", missing.body, json!({"message": "Order not found"}));
    for malformed in ["123", "zzzzzzzzzzzzzzzzzzzzzzzz", "0123456789abcdef012345678", "%00%01"] {
        let answer = api.get(&format!("/orders/{malformed}")).await;
        c.eq(&format!("get malformed id {malformed}: 400"), answer.status, StatusCode::BAD_REQUEST);
        c.check(&format!("get malformed id {malformed}: JSON message"), has_message(&answer), &answer.body);
    }
    // The caller's request id comes back (the orders components echo it;
    // a runtime adds none of its own, and nginx adds one in production).
    let echoed = api.send(Method::GET, &format!("/orders/{id}"), &[("x-request-id", "contract-test-42")], None).await;
    c.eq("request id: echoed", echoed.header("x-request-id"), Some("contract-test-42"));
    c.eq("request id: echoed once", echoed.headers.get_all("x-request-id").iter().count(), 1);
}

async fn validation(api: &Api, c: &mut Checks) {
    let missing = api.create(&json!({"quantity": 1})).await;
    c.eq("create missing fields: 422", missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    c.eq("create missing fields: every field named", error_fields(&missing), vec!["product", "customer_name", "customer_address"]);
    c.check("create missing fields: message", has_message(&missing), &missing.body);
    for (label, quantity) in [("float", json!(5.0)), ("string", json!("5")), ("bool", json!(true)), ("zero", json!(0)),
        ("too large", json!(1_000_001)), ("negative", json!(-1)), ("null", json!(null)), ("huge", json!(1e300))] {
        let mut order = sample_order("q");
        order["quantity"] = quantity;
        let answer = api.create(&order).await;
        c.eq(&format!("quantity {label}: 422"), answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        c.eq(&format!("quantity {label}: field"), error_fields(&answer), vec!["quantity"]);
    }
    for (label, quantity) in [("min", 1), ("max", 1_000_000)] {
        let mut order = sample_order("q");
        order["quantity"] = json!(quantity);
        c.eq(&format!("quantity {label}: accepted"), api.create(&order).await.status, StatusCode::CREATED);
    }
    let mut typo = sample_order("t");
    typo["quantiy"] = json!(2);
    let answer = api.create(&typo).await;
    c.eq("unknown field: 422", answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    c.eq("unknown field: named", error_fields(&answer), vec!["quantiy"]);
    let mut long = sample_order("l");
    long["product"] = json!("x".repeat(201));
    long["customer_address"] = json!("y".repeat(501));
    long["customer_name"] = json!("   ");
    let answer = api.create(&long).await;
    c.eq("lengths: all three fields named", error_fields(&answer), vec!["product", "customer_name", "customer_address"]);
    let mut nul = sample_order("n");
    nul["customer_name"] = json!("Ada\u{0}");
    c.eq("NUL character: 422", api.create(&nul).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut injected = sample_order("i");
    injected["_id"] = json!("0123456789abcdef01234567");
    c.eq("client _id: 422", api.create(&injected).await.status, StatusCode::UNPROCESSABLE_ENTITY);

    let json_header = [("content-type", "application/json")];
    for (label, body) in [("truncated", "{\"product\":"), ("garbage", "not json"), ("empty", "")] {
        let answer = api.send(Method::POST, "/orders", &json_header, Some(body.as_bytes().to_vec())).await;
        c.eq(&format!("invalid JSON {label}: 400"), answer.status, StatusCode::BAD_REQUEST);
        c.check(&format!("invalid JSON {label}: JSON message"), has_message(&answer), &answer.body);
    }
    let answer = api.send(Method::POST, "/orders", &json_header, Some(vec![0xff, 0xfe, 0x00])).await;
    c.eq("binary body: 400", answer.status, StatusCode::BAD_REQUEST);
    let array = api.json(Method::POST, "/orders", &json!([1, 2]), &[]).await;
    c.eq("JSON array body: 422", array.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn media_type_and_size(api: &Api, c: &mut Checks) {
    let body = sample_order("m").to_string().into_bytes();
    let answer = api.send(Method::POST, "/orders", &[("content-type", "text/plain")], Some(body.clone())).await;
    c.eq("text/plain: 415", answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    c.check("415: JSON message", has_message(&answer), &answer.body);
    let answer = api.send(Method::POST, "/orders", &[], Some(body.clone())).await;
    c.eq("no content type: 415", answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let answer = api.send(Method::POST, "/orders", &[("content-type", "application/json; charset=utf-8")], Some(body)).await;
    c.eq("application/json with charset: 201", answer.status, StatusCode::CREATED);
    let mut big = sample_order("big");
    big["product"] = json!("p".repeat(70 * 1024));
    let answer = api.create(&big).await;
    c.eq("body over 64 KiB: 413", answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    c.check("413: JSON message", has_message(&answer), &answer.body);
    let huge = vec![b' '; 2 << 20];
    let answer = api.send(Method::POST, "/orders", &[("content-type", "application/json")], Some(huge)).await;
    c.eq("body over the runner limit: 413", answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Whoever refuses it first (the runner, or nginx in front of a cluster) says so in JSON.
    c.check("413 over the runner limit: JSON message", has_message(&answer), &answer.body);
}

async fn updates(api: &Api, c: &mut Checks, tag: &str) {
    let created = api.create(&sample_order(tag)).await.body["order"].clone();
    let id = created["_id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/orders/{id}");
    let updated = api.json(Method::PUT, &path, &json!({"quantity": 7}), &[]).await;
    c.eq("update: 200", updated.status, StatusCode::OK);
    c.eq("update: message", updated.body["message"].as_str(), Some("Order updated successfully"));
    let order = &updated.body["order"];
    c.eq("update: quantity changed", order["quantity"].as_i64(), Some(7));
    c.eq("update: other fields kept", (&order["product"], &order["customer_name"], &order["customer_address"]),
        (&created["product"], &created["customer_name"], &created["customer_address"]));
    c.eq("update: version 2", order["version"].as_i64(), Some(2));
    c.eq("update: ETag 2", updated.header("etag"), Some("\"2\""));
    c.eq("update: created_at kept", &order["created_at"], &created["created_at"]);
    c.check("update: updated_at moves forward", order["updated_at"].as_str() >= created["updated_at"].as_str(), order);
    let read = api.get(&path).await;
    c.eq("update: read after write sees it", read.body["order"]["quantity"].as_i64(), Some(7));

    c.eq("update empty body: 422", api.json(Method::PUT, &path, &json!({}), &[]).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad = api.json(Method::PUT, &path, &json!({"quantity": "7", "colour": "red"}), &[]).await;
    c.eq("update bad fields: all named", error_fields(&bad), vec!["quantity", "colour"]);
    c.eq("update null: 422", api.json(Method::PUT, &path, &json!({"product": null}), &[]).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unchanged = api.get(&path).await;
    c.eq("update rejected: nothing applied", unchanged.body["order"]["version"].as_i64(), Some(2));
    c.eq("update unknown id: 404", api.json(Method::PUT, &format!("/orders/{MISSING_ID}"), &json!({"quantity": 1}), &[]).await.status, StatusCode::NOT_FOUND);
    c.eq("update malformed id: 400", api.json(Method::PUT, "/orders/nope", &json!({"quantity": 1}), &[]).await.status, StatusCode::BAD_REQUEST);
    let answer = api.send(Method::PUT, &path, &[("content-type", "text/plain")], Some(b"{\"quantity\":1}".to_vec())).await;
    c.eq("update text/plain: 415", answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let answer = api.send(Method::PUT, &path, &[("content-type", "application/json")], Some(b"{".to_vec())).await;
    c.eq("update invalid JSON: 400", answer.status, StatusCode::BAD_REQUEST);

    let stale = api.json(Method::PUT, &path, &json!({"quantity": 8}), &[("if-match", "\"1\"")]).await;
    c.eq("update If-Match stale: 412", stale.status, StatusCode::PRECONDITION_FAILED);
    c.check("412: JSON message", has_message(&stale), &stale.body);
    let fresh = api.json(Method::PUT, &path, &json!({"quantity": 8}), &[("if-match", "\"2\"")]).await;
    c.eq("update If-Match current: 200", fresh.status, StatusCode::OK);
    let listed = api.json(Method::PUT, &path, &json!({"quantity": 9}), &[("if-match", "\"1\", \"3\"")]).await;
    c.eq("update If-Match list containing current: 200", listed.status, StatusCode::OK);
    let star = api.json(Method::PUT, &path, &json!({"quantity": 9}), &[("if-match", "*")]).await;
    c.eq("update If-Match *: 200", star.status, StatusCode::OK);
    let malformed = api.json(Method::PUT, &path, &json!({"quantity": 9}), &[("if-match", "5")]).await;
    c.eq("update If-Match unquoted: 400", malformed.status, StatusCode::BAD_REQUEST);
}

async fn deletes(api: &Api, c: &mut Checks, tag: &str) {
    let id = api.create(&sample_order(tag)).await.body["order"]["_id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/orders/{id}");
    let stale = api.send(Method::DELETE, &path, &[("if-match", "\"7\"")], None).await;
    c.eq("delete If-Match stale: 412", stale.status, StatusCode::PRECONDITION_FAILED);
    c.eq("delete If-Match stale: still there", api.get(&path).await.status, StatusCode::OK);
    let deleted = api.send(Method::DELETE, &path, &[("if-match", "\"1\"")], None).await;
    c.eq("delete: 200", deleted.status, StatusCode::OK);
    c.eq("delete: message", deleted.body, json!({"message": "Order deleted successfully"}));
    c.eq("delete: then get is 404", api.get(&path).await.status, StatusCode::NOT_FOUND);
    let again = api.send(Method::DELETE, &path, &[], None).await;
    c.eq("delete again: 404", again.status, StatusCode::NOT_FOUND);
    c.eq("delete again: message", again.body, json!({"message": "Order not found"}));
    c.eq("delete malformed id: 400", api.send(Method::DELETE, "/orders/xyz", &[], None).await.status, StatusCode::BAD_REQUEST);
}

async fn routing(api: &Api, c: &mut Checks) {
    for (method, path, allow) in [
        (Method::PATCH, "/orders".to_owned(), "GET, POST"),
        (Method::DELETE, "/orders".to_owned(), "GET, POST"),
        (Method::PATCH, format!("/orders/{MISSING_ID}"), "GET, PUT, DELETE"),
        (Method::POST, format!("/orders/{MISSING_ID}"), "GET, PUT, DELETE"),
        (Method::POST, "/healthz".to_owned(), "GET"),
    ] {
        let answer = api.send(method.clone(), &path, &[], None).await;
        c.eq(&format!("{method} {path}: 405"), answer.status, StatusCode::METHOD_NOT_ALLOWED);
        c.eq(&format!("{method} {path}: Allow"), answer.header("allow"), Some(allow));
        c.check(&format!("{method} {path}: JSON message"), has_message(&answer), &answer.body);
    }
    for path in ["/nope", "/orders/a/b", "/orders-x", "/bundles/new/x"] {
        let answer = api.get(path).await;
        c.eq(&format!("unknown route {path}: 404"), answer.status, StatusCode::NOT_FOUND);
        c.check(&format!("unknown route {path}: JSON message"), has_message(&answer), &answer.body);
    }
}

async fn idempotency(api: &Api, c: &mut Checks, tag: &str) {
    let key = format!("contract-{tag}-{}", rand_suffix());
    let order = sample_order(&format!("idem-{tag}"));
    let first = api.json(Method::POST, "/orders", &order, &[("idempotency-key", &key)]).await;
    c.eq("idempotent first: 201", first.status, StatusCode::CREATED);
    let retry = api.json(Method::POST, "/orders", &order, &[("idempotency-key", &key)]).await;
    c.eq("idempotent retry: 201", retry.status, StatusCode::CREATED);
    c.eq("idempotent retry: same _id", &retry.body["order"]["_id"], &first.body["order"]["_id"]);
    c.eq("idempotent retry: same Location", retry.header("location"), first.header("location"));
    let mut reordered = json!({});
    for field in ["customer_address", "quantity", "customer_name", "product"] {
        reordered[field] = order[field].clone();
    }
    let same = api.json(Method::POST, "/orders", &reordered, &[("idempotency-key", &key)]).await;
    c.eq("idempotent retry with reordered keys: same _id", &same.body["order"]["_id"], &first.body["order"]["_id"]);
    let mut other = order.clone();
    other["quantity"] = json!(99);
    let conflict = api.json(Method::POST, "/orders", &other, &[("idempotency-key", &key)]).await;
    c.eq("idempotent other body: 409", conflict.status, StatusCode::CONFLICT);
    c.check("409: JSON message", has_message(&conflict), &conflict.body);
    let too_long = "k".repeat(201);
    let answer = api.json(Method::POST, "/orders", &order, &[("idempotency-key", &too_long)]).await;
    c.eq("idempotency key too long: 400", answer.status, StatusCode::BAD_REQUEST);

    // Twenty concurrent retries of one keyed request create one order.
    let key = format!("race-{tag}-{}", rand_suffix());
    let headers = [("idempotency-key", key.as_str())];
    let answers = futures::future::join_all((0..20).map(|_| api.json(Method::POST, "/orders", &order, &headers))).await;
    let statuses: HashSet<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    let ids: HashSet<String> = answers.iter().filter_map(|a| a.body["order"]["_id"].as_str().map(str::to_owned)).collect();
    c.eq("concurrent retries: all 201", statuses, HashSet::from([201]));
    c.eq("concurrent retries: one order", ids.len(), 1);
}

async fn pagination(api: &Api, c: &mut Checks, tag: &str) {
    let mut created = Vec::new();
    for n in 0..5 {
        let answer = api.create(&sample_order(&format!("page-{tag}-{n}"))).await;
        created.push(answer.body["order"]["_id"].as_str().unwrap_or_default().to_owned());
    }
    let first = api.get("/orders?limit=2").await;
    c.eq("list: 200", first.status, StatusCode::OK);
    c.eq("list limit=2: two orders", first.body["orders"].as_array().map(Vec::len), Some(2));
    c.check("list limit=2: next cursor", first.body["next"].is_string(), &first.body["next"]);
    let default = api.get("/orders").await;
    let default_len = default.body["orders"].as_array().map(Vec::len).unwrap_or(0);
    c.check("list default: at most 100", default_len <= 100 && default_len >= 5, default_len);
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..100_000 {
        let path = match &next {
            Some(after) => format!("/orders?limit=1000&after={after}"),
            None => "/orders?limit=1000".to_owned(),
        };
        let page = api.get(&path).await;
        if page.status != StatusCode::OK {
            c.eq("list all: every page 200", page.status, StatusCode::OK);
            break;
        }
        for order in page.body["orders"].as_array().cloned().unwrap_or_default() {
            seen.push(order["_id"].as_str().unwrap_or_default().to_owned());
        }
        next = page.body["next"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    c.eq("list all: ascending by _id, no duplicates", &seen, &sorted);
    c.check("list all: contains every created order", created.iter().all(|id| seen.contains(id)), &created);
    let after = api.get(&format!("/orders?limit=2&after={}", created[2])).await;
    let ids: Vec<&str> = after.body["orders"].as_array().map(|o| o.iter().filter_map(|x| x["_id"].as_str()).collect()).unwrap_or_default();
    c.check("list after: strictly greater ids", ids.iter().all(|id| *id > created[2].as_str()), &ids);
    for query in ["limit=0", "limit=1001", "limit=abc", "limit=-5", "limit=2.5", "after=nope", "after=", "limit=1&limit=2"] {
        let answer = api.get(&format!("/orders?{query}")).await;
        c.eq(&format!("list {query}: 400"), answer.status, StatusCode::BAD_REQUEST);
        c.check(&format!("list {query}: JSON message"), has_message(&answer), &answer.body);
    }
}

async fn service_endpoints(api: &Api, c: &mut Checks) {
    let health = api.get("/healthz").await;
    c.eq("healthz: 200", health.status, StatusCode::OK);
    let ready = api.get("/readyz").await;
    c.eq("readyz: 200", ready.status, StatusCode::OK);
    let openapi = api.get("/openapi.json").await;
    c.eq("openapi: 200", openapi.status, StatusCode::OK);
    c.eq("openapi: version 3.1", openapi.body["openapi"].as_str(), Some("3.1.0"));
}

/// The Access rows: no credential or a wrong one is a 401 with
/// `WWW-Authenticate: Bearer` on every endpoint; the public routes stay public.
async fn access(api: &Api, c: &mut Checks) {
    let anonymous = api.anonymous();
    let id = api.create(&sample_order("access")).await.body["order"]["_id"].as_str().unwrap_or(MISSING_ID).to_owned();
    let item = format!("/orders/{id}");
    let order = sample_order("anonymous").to_string().into_bytes();
    let json = [("content-type", "application/json")];
    let wrong_key = "ordk_0000000000000000000000000000000000000000000000000000000000000000";
    for (method, path, body) in [
        (Method::GET, "/orders".to_owned(), None),
        (Method::POST, "/orders".to_owned(), Some(order.clone())),
        (Method::GET, item.clone(), None),
        (Method::PUT, item.clone(), Some(b"{\"quantity\": 4}".to_vec())),
        (Method::DELETE, item.clone(), None),
        (Method::POST, "/bundles".to_owned(), Some(b"{\"urls\": [\"https://example.com/a.png\"]}".to_vec())),
        (Method::GET, "/bundles/000000000000000000000000".to_owned(), None),
        (Method::GET, "/bundles/000000000000000000000000/events".to_owned(), None),
        (Method::GET, "/audit".to_owned(), None),
    ] {
        let name = format!("{method} {path}");
        for (label, headers) in [("no credential", json.to_vec()), ("unknown key", vec![json[0], ("authorization", "")])] {
            let mut headers = headers;
            let bearer = format!("Bearer {wrong_key}");
            if let Some(slot) = headers.iter_mut().find(|(n, _)| *n == "authorization") {
                slot.1 = &bearer;
            }
            let answer = anonymous.send(method.clone(), &path, &headers, body.clone()).await;
            c.eq(&format!("{name} with {label}: 401"), answer.status, StatusCode::UNAUTHORIZED);
            c.check(&format!("{name} with {label}: WWW-Authenticate Bearer"), answer.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), answer.headers.clone());
            c.check(&format!("{name} with {label}: JSON message"), has_message(&answer), &answer.body);
        }
    }
    c.eq("the order is still there after the refused writes", api.get(&item).await.body["order"]["version"].as_i64(), Some(1));
    for path in ["/healthz", "/readyz", "/openapi.json", "/bundles/new"] {
        c.eq(&format!("{path} is public"), anonymous.get(path).await.status, StatusCode::OK);
    }
}
