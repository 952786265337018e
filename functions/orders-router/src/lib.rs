//! Spin routes by path only, while the contract gives `/orders` and
//! `/orders/{id}` one component per method. This component owns both routes
//! and hands each request, unchanged, to the private component of its method
//! through Spin's local service chaining (`http://<component>.spin.internal`).
//! It answers with the caller's `X-Request-Id` (`respond::finish`), as the
//! functions do. The project's runner routes by method itself and skips
//! this component (the `tool.orders-runner` tables in `spin.toml`); it
//! still answers what those tables leave out, such as 405 with `Allow`.

use orders_common::ApiError;
use orders_common::respond::{finish, request_id};
use spin_sdk::http::{Method, Request, Response, send};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), route(request).await)
}

async fn route(request: Request) -> Result<Response, ApiError> {
    let is_item = request.path().trim_end_matches('/').trim_start_matches('/').contains('/');
    let target = match (is_item, request.method()) {
        (false, Method::Get) => "orders-list",
        (false, Method::Post) => "orders-create",
        (false, _) => return Err(ApiError::method_not_allowed(&["GET", "POST"])),
        (true, Method::Get) => "orders-get",
        (true, Method::Put) => "orders-update",
        (true, Method::Delete) => "orders-delete",
        (true, _) => return Err(ApiError::method_not_allowed(&["GET", "PUT", "DELETE"])),
    };
    forward(request, target).await
}

async fn forward(request: Request, component: &str) -> Result<Response, ApiError> {
    let path_and_query = request.path_and_query().unwrap_or("/").to_owned();
    let mut builder = Request::builder();
    builder
        .method(request.method().clone())
        .uri(format!("http://{component}.spin.internal{path_and_query}"));
    for (name, value) in request.headers() {
        // Spin sets its own routing headers on the chained request.
        if !name.starts_with("spin-") && name != "host" {
            builder.header(name, value.as_str().unwrap_or_default());
        }
    }
    builder.body(request.into_body());
    send::<_, Response>(builder.build())
        .await
        .map_err(|e| ApiError::unavailable(format!("The {component} function is unavailable: {e}")))
}
