//! The sidecar calls of the bundle components: the `bundles` event log and
//! job stream, one-time marks, and the zip blobs.

use orders_vocabulary::api::{
    AppendEventRequest, AppendJobRequest, Appended, ErrorBody, ErrorCode, Events, MarkRequest, Marked, ReleaseRequest, Released,
    ReserveRequest, Reserved, SpendRequest, Spent,
};
use orders_vocabulary::bundle::{BundleEvent, BundleJob, LoggedBundleEvent};
use orders_vocabulary::names::{BUNDLE_LOG as LOG, BUNDLE_STREAM as STREAM};
use spin_sdk::http::{IncomingResponse, Method, Response, send};

use crate::bundle::BundleId;
use crate::error::ApiError;
use crate::sidecar::{SidecarClient, json_body, unreachable};

/// The sidecar's answer to a reservation of a one-time mark.
pub use orders_vocabulary::api::Reservation;

/// The `Retry-After` of a sidecar answer, in seconds.
fn retry_after(response: &Response) -> u32 {
    response.header("retry-after").and_then(|v| v.as_str()).and_then(|v| v.parse().ok()).unwrap_or(10)
}

/// The sidecar's `{"error", "message"}` of a failed call.
fn sidecar_error(response: &Response) -> Option<ErrorBody> {
    serde_json::from_slice(response.body()).ok()
}

impl SidecarClient {
    pub async fn append_bundle_event(&self, bundle: &BundleId, event: &BundleEvent) -> Result<String, ApiError> {
        let path = format!("/v1/logs/{LOG}/{}", bundle.as_str());
        let (event, data) = event.to_parts();
        let response = self.call(Method::Post, &path, json_body(&AppendEventRequest { event, data })?).await?;
        Ok(Self::decode::<Appended>(&response)?.id)
    }

    /// The bundle's events after `after`; waits up to `wait_ms` for the first.
    /// An `after` the log never handed out is the client's mistake (400).
    pub async fn bundle_events(&self, bundle: &BundleId, after: Option<&str>, wait_ms: u64) -> Result<Vec<LoggedBundleEvent>, ApiError> {
        let mut path = format!("/v1/logs/{LOG}/{}?wait_ms={wait_ms}", bundle.as_str());
        if let Some(after) = after {
            path.push_str("&after=");
            path.push_str(&percent_encode(after));
        }
        let response = self.call(Method::Get, &path, None).await?;
        if *response.status() == 400 {
            return Err(ApiError::bad_request("Last-Event-ID is not an event id of this bundle"));
        }
        Ok(Self::decode::<Events<LoggedBundleEvent>>(&response)?.events)
    }

    /// Every event of the bundle so far.
    pub async fn all_bundle_events(&self, bundle: &BundleId) -> Result<Vec<LoggedBundleEvent>, ApiError> {
        let mut events: Vec<LoggedBundleEvent> = Vec::new();
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
    pub async fn queue_bundle_job(&self, job: &BundleJob, limit_key: &str) -> Result<String, ApiError> {
        let body = json_body(&AppendJobRequest { payload: job, limit_key: Some(limit_key.to_owned()) })?;
        let response = self.call(Method::Post, &format!("/v1/streams/{STREAM}"), body).await?;
        match (*response.status(), sidecar_error(&response)) {
            (429, error) => Err(ApiError::too_many_requests(
                format!("Too many of your bundles are queued or running: {}", error.map(|e| e.message).unwrap_or_default()),
                retry_after(&response),
            )),
            (503, Some(ErrorBody { error: ErrorCode::StreamFull, .. })) => Err(ApiError::at_capacity(
                "Too many bundles are queued or running right now; retry later",
                retry_after(&response),
            )),
            _ => Ok(Self::decode::<Appended>(&response)?.id),
        }
    }

    /// Takes the mark `key` for `ttl_secs`; `false` when it was taken before.
    pub async fn mark_once(&self, key: &str, ttl_secs: u64) -> Result<bool, ApiError> {
        let response = self.call(Method::Post, &format!("/v1/marks/{key}"), json_body(&MarkRequest { ttl_secs })?).await?;
        if *response.status() == 409 {
            return Ok(false);
        }
        Self::decode::<Marked>(&response).map(|_| true)
    }

    /// Reserves the one-time mark `key` for `holder` for `lease_secs`
    /// (asking again renews it).
    pub async fn reserve_mark(&self, key: &str, holder: &str, lease_secs: u64) -> Result<Reservation, ApiError> {
        let body = json_body(&ReserveRequest { holder: holder.to_owned(), lease_secs })?;
        let response = self.call(Method::Post, &format!("/v1/marks/{key}/reserve"), body).await?;
        Ok(Self::decode::<Reserved>(&response)?.reservation)
    }

    /// Spends `holder`'s reservation of `key` for `ttl_secs`; `false` when
    /// `holder` no longer holds it.
    pub async fn spend_mark(&self, key: &str, holder: &str, ttl_secs: u64) -> Result<bool, ApiError> {
        let body = json_body(&SpendRequest { holder: holder.to_owned(), ttl_secs })?;
        let response = self.call(Method::Post, &format!("/v1/marks/{key}/spend"), body).await?;
        if *response.status() == 409 {
            return Ok(false);
        }
        Self::decode::<Spent>(&response).map(|_| true)
    }

    /// Gives back `holder`'s reservation of `key`, unspent.
    pub async fn release_mark(&self, key: &str, holder: &str) -> Result<(), ApiError> {
        let body = json_body(&ReleaseRequest { holder: holder.to_owned() })?;
        let response = self.call(Method::Post, &format!("/v1/marks/{key}/release"), body).await?;
        Self::decode::<Released>(&response).map(drop)
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
