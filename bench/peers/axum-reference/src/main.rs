//! The orders API as one native process: axum routes straight onto the
//! MongoDB driver. It keeps the shapes of the orders contract (pagination,
//! 201 on create, partial PUT, 404/400/422) so that its numbers can be set
//! against the Wasm-and-sidecar product request for request; what it leaves
//! out (idempotency keys, ETags, the cache) is what the product adds.
//!
//! Environment: `MONGO_URI` (required), `MONGO_DATABASE` (default
//! `orders_db`), `LISTEN` (default `127.0.0.1:0`), `MONGO_POOL_SIZE` (32, as
//! the product's sidecar). Prints `axum-reference listening on http://ADDR`.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::options::{Acknowledgment, ClientOptions, FindOneAndUpdateOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection};
use serde::Deserialize;
use serde_json::{Map, Value, json};

const WRITABLE: [(&str, usize); 4] = [("product", 200), ("quantity", 0), ("customer_name", 200), ("customer_address", 500)];

#[derive(Clone)]
struct Orders(Collection<Document>);

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

fn unavailable(error: mongodb::error::Error) -> Response {
    eprintln!("mongodb: {error}");
    message(StatusCode::SERVICE_UNAVAILABLE, "The store is unavailable; retry shortly.")
}

fn now_rfc3339() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(&format).unwrap_or_default()
}

fn to_json(mut document: Document) -> Value {
    let id = match document.remove("_id") {
        Some(Bson::ObjectId(id)) => Value::from(id.to_hex()),
        _ => Value::Null,
    };
    let mut order = Map::with_capacity(document.len() + 1);
    order.insert("_id".into(), id);
    for (name, value) in document {
        order.insert(name, value.into_relaxed_extjson());
    }
    Value::Object(order)
}

fn parse_id(id: &str) -> Result<ObjectId, Response> {
    let well_formed = id.len() == 24 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match ObjectId::parse_str(id) {
        Ok(object_id) if well_formed => Ok(object_id),
        _ => Err(message(StatusCode::BAD_REQUEST, "The order id must be 24 lowercase hexadecimal characters.")),
    }
}

/// The writable fields of a body as BSON, or a 422 naming every bad field.
fn parse_fields(body: &Value, require_all: bool) -> Result<Document, Response> {
    let Some(object) = body.as_object() else {
        return Err(message(StatusCode::BAD_REQUEST, "The body must be a JSON object."));
    };
    let mut errors = Vec::new();
    let mut fields = Document::new();
    for name in object.keys().filter(|name| !WRITABLE.iter().any(|(known, _)| known == name)) {
        errors.push(json!({ "field": name, "problem": "is not a field of an order" }));
    }
    for (name, max_len) in WRITABLE {
        match (object.get(name), name) {
            (None, _) if require_all => errors.push(json!({ "field": name, "problem": "is required" })),
            (None, _) => {}
            (Some(value), "quantity") => match value.as_i64().filter(|q| (1..=1_000_000).contains(q) && !value.is_f64()) {
                Some(quantity) => { fields.insert(name, quantity); }
                None => errors.push(json!({ "field": name, "problem": "must be an integer between 1 and 1000000" })),
            },
            (Some(value), _) => match value.as_str().map(str::trim).filter(|s| !s.is_empty() && s.chars().count() <= max_len && !s.contains('\0')) {
                Some(text) => { fields.insert(name, text); }
                None => errors.push(json!({ "field": name, "problem": format!("must be a string of 1 to {max_len} characters") })),
            },
        }
    }
    if fields.is_empty() && errors.is_empty() {
        errors.push(json!({ "field": "body", "problem": "must set at least one field" }));
    }
    if errors.is_empty() {
        Ok(fields)
    } else {
        Err((StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "message": "The order is not valid.", "errors": errors }))).into_response())
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|_| message(StatusCode::BAD_REQUEST, "The body is not valid JSON."))
}

async fn list(State(orders): State<Orders>, Query(query): Query<ListQuery>) -> Response {
    let limit = match query.limit.as_deref().map(str::parse::<i64>) {
        None => 100,
        Some(Ok(limit)) if (1..=1000).contains(&limit) => limit,
        Some(_) => return message(StatusCode::BAD_REQUEST, "limit must be an integer from 1 to 1000."),
    };
    let filter = match query.after.as_deref().map(parse_id) {
        None => doc! {},
        Some(Ok(after)) => doc! { "_id": { "$gt": after } },
        Some(Err(response)) => return response,
    };
    let cursor = match orders.0.find(filter).sort(doc! { "_id": 1 }).limit(limit).batch_size(limit as u32).await {
        Ok(cursor) => cursor,
        Err(error) => return unavailable(error),
    };
    let page: Vec<Value> = match cursor.try_collect::<Vec<Document>>().await {
        Ok(documents) => documents.into_iter().map(to_json).collect(),
        Err(error) => return unavailable(error),
    };
    let next = if page.len() as i64 == limit { page.last().map(|order| order["_id"].clone()) } else { None };
    Json(json!({ "orders": page, "next": next })).into_response()
}

async fn get_one(State(orders): State<Orders>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    match orders.0.find_one(doc! { "_id": id }).await {
        Ok(Some(order)) => Json(json!({ "order": to_json(order) })).into_response(),
        Ok(None) => message(StatusCode::NOT_FOUND, "Order not found"),
        Err(error) => unavailable(error),
    }
}

async fn create(State(orders): State<Orders>, body: axum::body::Bytes) -> Response {
    let mut order = match parse_body(&body).and_then(|value| parse_fields(&value, true)) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let now = now_rfc3339();
    order.insert("_id", ObjectId::new());
    order.insert("created_at", &now);
    order.insert("updated_at", &now);
    order.insert("version", 1_i64);
    match orders.0.insert_one(&order).await {
        Ok(_) => (StatusCode::CREATED, Json(json!({ "message": "Order created successfully", "order": to_json(order) }))).into_response(),
        Err(error) => unavailable(error),
    }
}

async fn update(State(orders): State<Orders>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let mut set = match parse_body(&body).and_then(|value| parse_fields(&value, false)) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    set.insert("updated_at", now_rfc3339());
    let options = FindOneAndUpdateOptions::builder().return_document(ReturnDocument::After).build();
    let update = doc! { "$set": set, "$inc": { "version": 1_i64 } };
    match orders.0.find_one_and_update(doc! { "_id": id }, update).with_options(options).await {
        Ok(Some(order)) => Json(json!({ "message": "Order updated successfully", "order": to_json(order) })).into_response(),
        Ok(None) => message(StatusCode::NOT_FOUND, "Order not found"),
        Err(error) => unavailable(error),
    }
}

async fn delete(State(orders): State<Orders>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    match orders.0.delete_one(doc! { "_id": id }).await {
        Ok(result) if result.deleted_count == 1 => message(StatusCode::OK, "Order deleted successfully"),
        Ok(_) => message(StatusCode::NOT_FOUND, "Order not found"),
        Err(error) => unavailable(error),
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::var("MONGO_URI").map_err(|_| "MONGO_URI must name the MongoDB server")?;
    let database = std::env::var("MONGO_DATABASE").unwrap_or_else(|_| "orders_db".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let pool_size = std::env::var("MONGO_POOL_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(32);

    let mut options = ClientOptions::parse(&uri).await?;
    options.app_name = Some("orders-axum-reference".into());
    options.max_pool_size = Some(pool_size);
    options.min_pool_size = Some(pool_size.min(4));
    options.server_selection_timeout = Some(Duration::from_secs(3));
    // The product's default write concern, so writes cost the same.
    options.write_concern = Some(WriteConcern::builder().w(Acknowledgment::Majority).journal(true).build());
    let client = Client::with_options(options)?;
    let db = client.database(&database);
    db.run_command(doc! { "ping": 1 }).await?;
    let orders = Orders(db.collection("orders"));

    let app = Router::new()
        .route("/orders", get(list).post(create))
        .route("/orders/{id}", get(get_one).put(update).delete(delete))
        .with_state(orders);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("axum-reference listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}
