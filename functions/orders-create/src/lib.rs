//! `POST /orders`: validates a new order and stores it once, even when the
//! client retries with the same Idempotency-Key.

use orders_common::access::{Access, Scope};
use orders_common::clock::now_rfc3339;
use orders_common::request::{IdempotencyKey, json_body};
use orders_common::respond::{finish, json, request_id};
use orders_common::served::OneOrder;
use orders_common::{ApiError, NewOrder, SidecarClient};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), create_order(request).await)
}

async fn create_order(request: Request) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_request(&request)?;
    let new_order = NewOrder::parse(&json_body(&request)?)?;
    let sidecar = SidecarClient::from_request(&request, Access::Scope(Scope::OrdersWrite))?;
    let created = sidecar.create_order(&new_order, key.as_ref(), &now_rfc3339()).await?;
    let order = created.doc;
    let mut headers = vec![("location", order.location()), ("etag", order.etag().to_owned())];
    if created.replayed {
        headers.push(("idempotent-replayed", "true".to_owned()));
    }
    let body = OneOrder { message: Some("Order created successfully"), order: &order };
    Ok(json(201, &body, &headers))
}
