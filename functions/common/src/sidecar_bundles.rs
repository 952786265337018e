//! The sidecar calls of the bundle components: the `bundles` event log and
//! job stream, one-time marks, and the zip blobs.

use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::{IncomingResponse, Method, Response, send};

use crate::bundle::{BundleId, Event};
use crate::error::ApiError;
use crate::sidecar::{SidecarClient, unreachable};

use orders_vocabulary::names::{BUNDLE_LOG as LOG, BUNDLE_STREAM as STREAM};

#[derive(Deserialize)]
struct Appended {
    id: String,
}

#[derive(Deserialize)]
struct Events {
    events: Vec<Event>,
}

/// The sidecar's answer to a reservation of a one-time mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reservation {
    Granted,
    Busy,
    Spent,
}

#[derive(Deserialize)]
struct Reserved {
    reservation: Reservation,
}

/// The `Retry-After` of a sidecar answer, in seconds.
fn retry_after(response: &Response) -> u32 {
    response.header("retry-after").and_then(|v| v.as_str()).and_then(|v| v.parse().ok()).unwrap_or(10)
}

/// The sidecar's `{"error", "message"}` of a failed call.
fn sidecar_error(response: &Response) -> (String, String) {
    let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    let text = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    (text("error"), text("message"))
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

    /// Queues the job, counted against `limit_key` (who asked for it): 429
    /// when that key has its share of unfinished bundles, 503 when the
    /// queue as a whole is full; both with the sidecar's `Retry-After`.
    pub async fn queue_bundle_job(&self, payload: Value, limit_key: &str) -> Result<String, ApiError> {
        let body = json!({ "payload": payload, "limit_key": limit_key });
        let response = self.call(Method::Post, &format!("/v1/streams/{STREAM}"), Some(body)).await?;
        match (*response.status(), sidecar_error(&response)) {
            (429, (_, message)) => Err(ApiError::too_many_requests(
                format!("Too many of your bundles are queued or running: {message}"),
                retry_after(&response),
            )),
            (503, (code, _)) if code == "stream_full" => Err(ApiError::at_capacity(
                "Too many bundles are queued or running right now; retry later",
                retry_after(&response),
            )),
            _ => Ok(Self::decode::<Appended>(response)?.id),
        }
    }

    /// Takes the mark `key` for `ttl_secs`; `false` when it was taken before.
    pub async fn mark_once(&self, key: &str, ttl_secs: u64) -> Result<bool, ApiError> {
        let response = self.call(Method::Post, &format!("/v1/marks/{key}"), Some(json!({ "ttl_secs": ttl_secs }))).await?;
        if *response.status() == 409 {
            return Ok(false);
        }
        Self::decode::<Value>(response).map(|_| true)
    }

    /// Reserves the one-time mark `key` for `holder` for `lease_secs`
    /// (asking again renews it).
    pub async fn reserve_mark(&self, key: &str, holder: &str, lease_secs: u64) -> Result<Reservation, ApiError> {
        let body = json!({ "holder": holder, "lease_secs": lease_secs });
        let response = self.call(Method::Post, &format!("/v1/marks/{key}/reserve"), Some(body)).await?;
        Ok(Self::decode::<Reserved>(response)?.reservation)
    }

    /// Spends `holder`'s reservation of `key` for `ttl_secs`; `false` when
    /// `holder` no longer holds it.
    pub async fn spend_mark(&self, key: &str, holder: &str, ttl_secs: u64) -> Result<bool, ApiError> {
        let body = json!({ "holder": holder, "ttl_secs": ttl_secs });
        let response = self.call(Method::Post, &format!("/v1/marks/{key}/spend"), Some(body)).await?;
        if *response.status() == 409 {
            return Ok(false);
        }
        Self::decode::<Value>(response).map(|_| true)
    }

    /// Gives back `holder`'s reservation of `key`, unspent.
    pub async fn release_mark(&self, key: &str, holder: &str) -> Result<(), ApiError> {
        let response = self.call(Method::Post, &format!("/v1/marks/{key}/release"), Some(json!({ "holder": holder }))).await?;
        Self::decode::<Value>(response).map(drop)
    }

    /// Whether the blob exists and can be opened, without reading it.
    pub async fn blob_exists(&self, key: &str) -> Result<bool, ApiError> {
        let response = self.call(Method::Head, &format!("/v1/blobs/{key}"), None).await?;
        match *response.status() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(ApiError::unavailable(format!("The blob store answered {status}; retry shortly"))),
        }
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
