//! `PUT /orders/{id}`: partial update; fields not sent keep their value.

use orders_common::access::{Access, Scope};
use orders_common::clock::now_rfc3339;
use orders_common::preconditions::IfMatch;
use orders_common::request::{json_body, order_id};
use orders_common::respond::{finish, json, request_id};
use orders_common::served::OneOrder;
use orders_common::{ApiError, OrderPatch, SidecarClient};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), update_order(request).await)
}

async fn update_order(request: Request) -> Result<Response, ApiError> {
    let order_id = order_id(&request)?;
    let if_match = IfMatch::parse(request.header("if-match").and_then(|v| v.as_str()))?;
    let patch = OrderPatch::parse(&json_body(&request)?)?;
    let sidecar = SidecarClient::from_request(&request, Access::Scope(Scope::OrdersWrite))?;
    let if_version = match &if_match {
        Some(tags) => tags.version_to_require(&sidecar, &order_id).await?,
        None => None,
    };
    let order = sidecar.update_order(&order_id, patch.fields(), if_version, &now_rfc3339()).await?;
    let body = OneOrder { message: Some("Order updated successfully"), order: &order };
    Ok(json(200, &body, &[("etag", order.etag().to_owned())]))
}
