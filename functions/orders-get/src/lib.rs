//! `GET /orders/{id}`: one order, with its version as ETag.

use orders_common::access::{Access, Scope};
use orders_common::request::order_id;
use orders_common::respond::{finish, json, request_id};
use orders_common::served::OneOrder;
use orders_common::{ApiError, SidecarClient};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), get_order(request).await)
}

async fn get_order(request: Request) -> Result<Response, ApiError> {
    let order_id = order_id(&request)?;
    let sidecar = SidecarClient::from_request(&request, Access::Scope(Scope::OrdersRead))?;
    let order = sidecar.get_order(&order_id).await?.ok_or_else(ApiError::order_not_found)?;
    Ok(json(200, &OneOrder { message: None, order: &order }, &[("etag", order.etag().to_owned())]))
}
