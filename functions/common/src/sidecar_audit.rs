//! The sidecar call of the audit component.

use serde_json::Value;
use spin_sdk::http::Method;

use crate::error::ApiError;
use crate::sidecar::SidecarClient;

impl SidecarClient {
    /// `{"entries": [...]}`: audit entries from `since_ms` on, oldest first.
    pub async fn audit(&self, since_ms: i64, limit: u32) -> Result<Value, ApiError> {
        let response = self.call(Method::Get, &format!("/v1/audit?since_ms={since_ms}&limit={limit}"), None).await?;
        Self::decode(&response)
    }
}
