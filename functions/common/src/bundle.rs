//! A bundle as the API shows it: its id, and its state folded from the
//! events the worker writes (`docs/bundles.md`, `orders_vocabulary::bundle`).
//! Folding is idempotent per event, so replays and redelivered jobs give the
//! same state.

use orders_vocabulary::bundle::{BundleEvent, LoggedBundleEvent};
use serde_json::{Value, json};

use crate::error::ApiError;

/// An ObjectId (`orders_vocabulary::id`), like an order's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleId(String);

impl BundleId {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        if orders_vocabulary::id::is_object_id(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ApiError::not_found("Bundle not found"))
        }
    }

    /// The id in the path of `/bundles/{id}` or `/bundles/{id}/events`.
    pub fn from_path(path: &str) -> Result<Self, ApiError> {
        let path = path.split('?').next().unwrap_or_default();
        let id = path.trim_start_matches("/bundles/").split('/').next().unwrap_or_default();
        Self::parse(id)
    }

    /// Twelve random bytes, like a MongoDB ObjectId's length.
    pub fn random(bytes: [u8; 12]) -> Self {
        Self(orders_vocabulary::id::from_bytes(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event of a bundle's log, as read back with its id.
pub type Event = LoggedBundleEvent;

/// The state of a bundle after `events`; `None` when it has none (unknown).
pub fn fold(id: &BundleId, events: &[Event]) -> Option<Value> {
    let (created_at, urls) = events.iter().find_map(|logged| match &logged.event {
        BundleEvent::Queued { created_at, urls } => Some((created_at, urls)),
        _ => None,
    })?;
    let mut state = json!({
        "id": id.as_str(),
        "status": "queued",
        "created_at": created_at,
        "files": urls.iter().map(|url| pending_file(url)).collect::<Vec<_>>(),
        "compress_percent": 0,
        "link": null,
        "expires_at": null,
        "error": null,
        "message": null,
    });
    for logged in events {
        apply(&mut state, urls, &logged.event);
    }
    Some(state)
}

fn pending_file(url: &str) -> Value {
    json!({ "url": url, "status": "pending", "received": 0, "total": null, "name": null, "error": null, "message": null })
}

/// File `index` of the state; an index past the URLs changes nothing.
fn file(state: &mut Value, index: usize) -> Option<&mut Value> {
    state["files"].get_mut(index)
}

fn apply(state: &mut Value, urls: &[String], event: &BundleEvent) {
    match event {
        BundleEvent::Queued { .. } => {}
        // A job that runs again starts its files over.
        BundleEvent::Started { .. } => {
            state["status"] = json!("downloading");
            state["compress_percent"] = json!(0);
            for (file, url) in state["files"].as_array_mut().into_iter().flatten().zip(urls) {
                *file = pending_file(url);
            }
        }
        BundleEvent::Progress { index, received, total } => {
            let Some(file) = file(state, *index) else { return };
            // Progress is written in the background and may land after the
            // file's end (docs/bundles.md): it cannot undo it.
            if matches!(file["status"].as_str(), Some("done" | "failed")) {
                return;
            }
            file["status"] = json!("downloading");
            file["received"] = json!(received);
            file["total"] = json!(total);
        }
        BundleEvent::Downloaded { index, name, bytes } => {
            let Some(file) = file(state, *index) else { return };
            file["status"] = json!("done");
            file["received"] = json!(bytes);
            file["total"] = json!(bytes);
            file["name"] = json!(name);
        }
        BundleEvent::DownloadFailed { index, error, message } => {
            let Some(file) = file(state, *index) else { return };
            file["status"] = json!("failed");
            file["error"] = json!(error);
            file["message"] = json!(message);
        }
        BundleEvent::Compress { percent } => {
            // Written in the background too: one landing after the end is stale.
            if matches!(state["status"].as_str(), Some("ready" | "failed")) {
                return;
            }
            state["status"] = json!("compressing");
            state["compress_percent"] = json!(percent);
        }
        BundleEvent::Ready { link, expires_at, .. } => {
            state["status"] = json!("ready");
            state["compress_percent"] = json!(100);
            state["link"] = json!(link);
            state["expires_at"] = json!(expires_at);
        }
        BundleEvent::Failed { error, message } => {
            state["status"] = json!("failed");
            state["error"] = json!(error);
            state["message"] = json!(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32, name: &str, data: Value) -> Event {
        Event { id: n.to_string(), event: BundleEvent::from_parts(name, &data).unwrap() }
    }

    fn id() -> BundleId {
        BundleId::parse("0123456789abcdef01234567").unwrap()
    }

    #[test]
    fn ids() {
        assert!(BundleId::parse("0123456789ABCDEF01234567").is_err());
        assert!(BundleId::parse("../etc").is_err());
        assert_eq!(BundleId::from_path("/bundles/0123456789abcdef01234567/events").unwrap(), id());
        assert_eq!(BundleId::random([255; 12]).as_str(), "ffffffffffffffffffffffff");
    }

    #[test]
    fn unknown_without_events() {
        assert_eq!(fold(&id(), &[]), None);
    }

    #[test]
    fn folds_a_whole_bundle() {
        let events = [
            event(1, "queued", json!({ "urls": ["http://a/x.png", "http://b/y"], "created_at": "t" })),
            event(2, "started", json!({ "attempt": 1 })),
            event(3, "progress", json!({ "index": 0, "received": 10, "total": 20 })),
            event(4, "downloaded", json!({ "index": 0, "name": "x.png", "bytes": 20 })),
            event(5, "download_failed", json!({ "index": 1, "error": "http_status", "message": "404" })),
            event(6, "compress", json!({ "percent": 50 })),
            event(7, "ready", json!({ "link": "/downloads/b.zip?md5=m&expires=1", "expires_at": "e", "files": 1, "bytes": 30 })),
        ];
        let state = fold(&id(), &events).unwrap();
        assert_eq!(state["status"], "ready");
        assert_eq!(state["files"][0]["status"], "done");
        assert_eq!(state["files"][0]["name"], "x.png");
        assert_eq!(state["files"][1]["status"], "failed");
        assert_eq!(state["files"][1]["error"], "http_status");
        assert_eq!(state["compress_percent"], 100);
        assert_eq!(state["link"], "/downloads/b.zip?md5=m&expires=1");
        // Mid-way: progress shows.
        let partial = fold(&id(), &events[..3]).unwrap();
        assert_eq!(partial["status"], "downloading");
        assert_eq!(partial["files"][0]["received"], 10);
        assert_eq!(partial["files"][1]["status"], "pending");
    }

    #[test]
    fn late_progress_does_not_undo_an_end() {
        let events = [
            event(1, "queued", json!({ "urls": ["http://a/x", "http://b/y"], "created_at": "t" })),
            event(2, "started", json!({ "attempt": 1 })),
            event(3, "downloaded", json!({ "index": 0, "name": "x", "bytes": 20 })),
            event(4, "download_failed", json!({ "index": 1, "error": "http_status", "message": "404" })),
            event(5, "progress", json!({ "index": 0, "received": 10, "total": 20 })),
            event(6, "progress", json!({ "index": 1, "received": 3, "total": null })),
            event(7, "ready", json!({ "link": "/downloads/b.zip?md5=m&expires=1", "expires_at": "e", "files": 1, "bytes": 20 })),
            event(8, "compress", json!({ "percent": 90 })),
        ];
        let state = fold(&id(), &events).unwrap();
        assert_eq!(state["files"][0]["status"], "done");
        assert_eq!(state["files"][0]["received"], 20);
        assert_eq!(state["files"][1]["status"], "failed");
        assert_eq!(state["status"], "ready", "a late compress event does not reopen the bundle");
        assert_eq!(state["compress_percent"], 100);
    }

    #[test]
    fn a_second_attempt_starts_over() {
        let events = [
            event(1, "queued", json!({ "urls": ["http://a/x"], "created_at": "t" })),
            event(2, "started", json!({ "attempt": 1 })),
            event(3, "progress", json!({ "index": 0, "received": 10, "total": 20 })),
            event(4, "started", json!({ "attempt": 2 })),
            event(5, "failed", json!({ "error": "nothing_downloaded", "message": "none" })),
        ];
        let state = fold(&id(), &events).unwrap();
        assert_eq!(state["files"][0]["received"], 0);
        assert_eq!(state["status"], "failed");
        assert_eq!(state["error"], "nothing_downloaded");
    }
}
