//! `GET /bundles/{id}`: the bundle's state, folded from its events.

use orders_common::access::{Access, Scope};
use orders_common::bundle::{BundleId, fold};
use orders_common::respond::{finish, json, request_id};
use orders_common::{ApiError, SidecarClient};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), get_bundle(request).await)
}

async fn get_bundle(request: Request) -> Result<Response, ApiError> {
    if !matches!(request.method(), Method::Get | Method::Head) {
        return Err(ApiError::method_not_allowed(&["GET", "HEAD"]));
    }
    let id = BundleId::from_path(request.path())?;
    let sidecar = SidecarClient::from_request(&request, Access::Scope(Scope::Bundles))?;
    let events = sidecar.all_bundle_events(&id).await?;
    let state = fold(&id, &events).ok_or_else(|| ApiError::not_found("Bundle not found"))?;
    Ok(json(200, &state, &[("cache-control", "no-store".to_owned())]))
}
