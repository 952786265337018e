//! `DELETE /orders/{id}`: removes an order, optionally only at a known version.

use orders_common::access::{Access, Scope};
use orders_common::preconditions::IfMatch;
use orders_common::request::order_id;
use orders_common::respond::{finish, json, request_id};
use orders_common::{ApiError, SidecarClient};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), delete_order(request).await)
}

async fn delete_order(request: Request) -> Result<Response, ApiError> {
    let order_id = order_id(&request)?;
    let if_match = IfMatch::parse(request.header("if-match").and_then(|v| v.as_str()))?;
    let sidecar = SidecarClient::from_request(&request, Access::Scope(Scope::OrdersDelete))?;
    let if_version = match &if_match {
        Some(tags) => tags.version_to_require(&sidecar, &order_id).await?,
        None => None,
    };
    sidecar.delete_order(&order_id, if_version).await?;
    Ok(json(200, &json!({ "message": "Order deleted successfully" }), &[]))
}
