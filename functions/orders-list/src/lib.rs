//! `GET /orders`: one page of orders in `_id` order, with the cursor of the next.

use orders_common::access::{Access, Scope};
use orders_common::request::PageQuery;
use orders_common::respond::{finish, json, request_id};
use orders_common::served::OrderPage;
use orders_common::{ApiError, SidecarClient};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), list_orders(request).await)
}

async fn list_orders(request: Request) -> Result<Response, ApiError> {
    let page = PageQuery::parse(request.query())?;
    let sidecar = SidecarClient::from_request(&request, Access::Scope(Scope::OrdersRead))?;
    // One more than asked tells whether a next page exists without a count.
    let mut orders = sidecar.list_orders(page.after.as_ref(), page.limit + 1).await?;
    let next = if orders.len() > page.limit as usize {
        orders.truncate(page.limit as usize);
        orders.last().map(|order| order.id())
    } else {
        None
    };
    sidecar.report_nonconforming(&orders).await;
    Ok(json(200, &OrderPage { orders: &orders, next }, &[]))
}
