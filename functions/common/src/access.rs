//! The component's half of access control (docs/adr/0010): the caller's
//! credential travels with every sidecar call, and a refusal from the
//! sidecar reaches the client as the sidecar phrased it, with its status and
//! headers (401 + `WWW-Authenticate`, 403 naming the scope, 429 + `Retry-After`).

use orders_access::{PASSED_HEADERS, Refusal};
use serde::Deserialize;
use spin_sdk::http::Response;

pub use orders_access::{Access, Scope};

use crate::error::ApiError;

#[derive(Deserialize)]
struct RefusalBody {
    error: String,
    #[serde(default)]
    message: String,
}

/// The client's refusal, when the sidecar refused the caller (not the component).
pub fn refusal(response: &Response) -> Option<ApiError> {
    if !matches!(*response.status(), 401 | 403 | 429) {
        return None;
    }
    let body: RefusalBody = serde_json::from_slice(response.body()).ok()?;
    let refusal = Refusal::from_code(&body.error)?;
    let headers = PASSED_HEADERS
        .iter()
        .filter_map(|name| response.header(name).and_then(|v| v.as_str()).map(|v| (*name, v.to_owned())))
        .collect();
    Some(ApiError::refused(refusal.status(), body.message, headers))
}
