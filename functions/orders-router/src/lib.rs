//! Spin routes by path only, while the contract gives `/orders` and
//! `/orders/{id}` one component per method. This component owns both routes
//! and hands each request, unchanged, to the private component of its method
//! through Spin's local service chaining (`http://<component>.spin.internal`).
//! It answers with the caller's `X-Request-Id`: no Spin runtime adds that
//! header to a component's answer, so the component that owns `/orders`
//! echoes it.

use orders_common::ApiError;
use spin_sdk::http::{Method, Request, Response, send};
use spin_sdk::http_component;

/// The header naming a request in every log line it causes.
const REQUEST_ID: &str = "x-request-id";

#[http_component]
async fn handle(request: Request) -> Response {
    let request_id = request.header(REQUEST_ID).and_then(|value| value.as_str()).map(str::to_owned);
    let mut response = route(request).await;
    if let Some(id) = request_id {
        response.set_header(REQUEST_ID, id);
    }
    response
}

async fn route(request: Request) -> Response {
    let is_item = request.path().trim_end_matches('/').trim_start_matches('/').contains('/');
    let target = match (is_item, request.method()) {
        (false, Method::Get) => "orders-list",
        (false, Method::Post) => "orders-create",
        (false, _) => return ApiError::method_not_allowed(&["GET", "POST"]).into_response(),
        (true, Method::Get) => "orders-get",
        (true, Method::Put) => "orders-update",
        (true, Method::Delete) => "orders-delete",
        (true, _) => return ApiError::method_not_allowed(&["GET", "PUT", "DELETE"]).into_response(),
    };
    forward(request, target).await.unwrap_or_else(ApiError::into_response)
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
