//! What surrounds the orders endpoints: the OpenAPI document, liveness and
//! readiness probes, and the JSON 404 for every path no other route claims
//! (this component also holds Spin's catch-all route `/...`).

use orders_common::access::Access;
use orders_common::respond::json;
use orders_common::{ApiError, SidecarClient};
use serde_json::json;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

const OPENAPI: &str = include_str!("../openapi.json");

#[http_component]
async fn handle(request: Request) -> Response {
    let path = request.path().to_owned();
    let known = matches!(path.as_str(), "/openapi.json" | "/healthz" | "/readyz");
    if known && *request.method() != Method::Get {
        return ApiError::method_not_allowed(&["GET"]).into_response();
    }
    match path.as_str() {
        "/openapi.json" => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(OPENAPI)
            .build(),
        "/healthz" => json(200, &json!({ "status": "ok" }), &[]),
        "/readyz" => readiness(&request).await,
        _ => ApiError::not_found(format!("No route for {path}; see /openapi.json")).into_response(),
    }
}

async fn readiness(request: &Request) -> Response {
    let ready = match SidecarClient::from_request(request, Access::Public) {
        Ok(sidecar) => sidecar.store_ready().await,
        Err(error) => Err(error),
    };
    match ready {
        Ok(()) => json(200, &json!({ "status": "ready" }), &[]),
        Err(error) => ApiError::unavailable(format!("Not ready: {}", error.message)).into_response(),
    }
}
