//! The sidecar calls of the bundle components: the `bundles` event log and
//! job stream, one-time marks, and the zip blobs.

use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::{IncomingResponse, Method, send};

use crate::bundle::{BundleId, Event};
use crate::error::ApiError;
use crate::sidecar::{SidecarClient, unreachable};

const LOG: &str = "bundles";
const STREAM: &str = "bundles";

#[derive(Deserialize)]
struct Appended {
    id: String,
}

#[derive(Deserialize)]
struct Events {
    events: Vec<Event>,
}

impl SidecarClient {
    pub async fn append_bundle_event(&self, bundle: &BundleId, event: &str, data: Value) -> Result<String, ApiError> {
        let path = format!("/v1/logs/{LOG}/{}", bundle.as_str());
        let response = self.call(Method::Post, &path, Some(json!({ "event": event, "data": data }))).await?;
        Ok(Self::decode::<Appended>(response)?.id)
    }

    /// The bundle's events after `after`; waits up to `wait_ms` for the first.
    /// An `after` the log never handed out is the client's mistake (400).
    pub async fn bundle_events(&self, bundle: &BundleId, after: Option<&str>, wait_ms: u64) -> Result<Vec<Event>, ApiError> {
        let mut path = format!("/v1/logs/{LOG}/{}?wait_ms={wait_ms}", bundle.as_str());
        if let Some(after) = after {
            path.push_str("&after=");
            path.push_str(&percent_encode(after));
        }
        let response = self.call(Method::Get, &path, None).await?;
        if *response.status() == 400 {
            return Err(ApiError::bad_request("Last-Event-ID is not an event id of this bundle"));
        }
        Ok(Self::decode::<Events>(response)?.events)
    }

    /// Every event of the bundle so far.
    pub async fn all_bundle_events(&self, bundle: &BundleId) -> Result<Vec<Event>, ApiError> {
        let mut events: Vec<Event> = Vec::new();
        loop {
            let page = self.bundle_events(bundle, events.last().map(|e| e.id.as_str()), 0).await?;
            if page.is_empty() {
                return Ok(events);
            }
            events.extend(page);
        }
    }

    pub async fn queue_bundle_job(&self, payload: Value) -> Result<String, ApiError> {
        let response = self.call(Method::Post, &format!("/v1/streams/{STREAM}"), Some(json!({ "payload": payload }))).await?;
        Ok(Self::decode::<Appended>(response)?.id)
    }

    /// Takes the mark `key` for `ttl_secs`; `false` when it was taken before.
    pub async fn mark_once(&self, key: &str, ttl_secs: u64) -> Result<bool, ApiError> {
        let response = self.call(Method::Post, &format!("/v1/marks/{key}"), Some(json!({ "ttl_secs": ttl_secs }))).await?;
        if *response.status() == 409 {
            return Ok(false);
        }
        Self::decode::<Value>(response).map(|_| true)
    }

    /// The blob's response with its body unread, for streaming; `None` when absent.
    pub async fn open_blob(&self, key: &str) -> Result<Option<IncomingResponse>, ApiError> {
        let response: IncomingResponse = send(self.request(Method::Get, &format!("/v1/blobs/{key}"), None)).await.map_err(unreachable)?;
        match response.status() {
            200 => Ok(Some(response)),
            404 => Ok(None),
            status => Err(ApiError::unavailable(format!("The blob store answered {status}; retry shortly"))),
        }
    }
}

/// Event ids are opaque; keep anything odd from changing the query.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
