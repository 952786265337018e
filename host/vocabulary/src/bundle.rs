//! A bundle between its parts: the job `POST /bundles` queues on the
//! [`BUNDLE_STREAM`](crate::names::BUNDLE_STREAM) for the worker, the events
//! written to its log (by the component: `queued`; by the worker: the rest),
//! which `GET /bundles/{id}` folds and `GET /bundles/{id}/events` streams to
//! the page, and the names of its zip.
//!
//! The events travel as `{"event": name, "data": {...}}`, the shape of the
//! sidecar's event logs; their fields are declared in the order the log has
//! always held them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the worker needs of a bundle: its id and its URLs, already checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleJob {
    pub bundle: String,
    pub urls: Vec<String>,
}

/// One step of a bundle. A job that runs again writes `started` again and
/// its files start over; `ready` and `failed` end the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum BundleEvent {
    /// Accepted (`POST /bundles`), with the URLs in the order of the files.
    Queued {
        created_at: String,
        urls: Vec<String>,
    },
    /// A worker began its `attempt`-th delivery of the job.
    Started { attempt: u64 },
    /// Bytes of file `index` so far, of `total` when the server said.
    Progress {
        index: usize,
        received: u64,
        total: Option<u64>,
    },
    /// File `index` is in the zip as `name`.
    Downloaded {
        index: usize,
        name: String,
        bytes: u64,
    },
    /// File `index` is not, for the reason `error` (a code) says.
    DownloadFailed {
        index: usize,
        error: String,
        message: String,
    },
    /// The zip is `percent` written.
    Compress { percent: u8 },
    /// The one-time link to the zip, until `expires_at`.
    Ready {
        link: String,
        expires_at: String,
        files: usize,
        bytes: u64,
    },
    /// No zip: `error` is a code (`nothing_downloaded`, `gave_up`).
    Failed { error: String, message: String },
}

impl BundleEvent {
    /// Whether the bundle is finished after this event.
    pub fn ends_bundle(&self) -> bool {
        matches!(self, BundleEvent::Ready { .. } | BundleEvent::Failed { .. })
    }

    /// The event's name and data, as an event log stores them.
    pub fn to_parts(&self) -> (String, Value) {
        let mut tagged = match serde_json::to_value(self) {
            Ok(Value::Object(tagged)) => tagged,
            _ => unreachable!("an adjacently tagged enum of structs is a JSON object"),
        };
        let name = match tagged.remove("event") {
            Some(Value::String(name)) => name,
            _ => unreachable!("the tag is the variant's name"),
        };
        (name, tagged.remove("data").unwrap_or(Value::Null))
    }

    /// The event an event log stored as `name` with `data`.
    pub fn from_parts(name: &str, data: &Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "event": name, "data": data }))
    }
}

/// An event as read back from the log, with the log's id for it (opaque,
/// increasing: what `Last-Event-ID` resumes after).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedBundleEvent {
    pub id: String,
    #[serde(flatten)]
    pub event: BundleEvent,
}

/// The path under which the platform (or nginx) serves bundle zips.
pub const DOWNLOAD_PATH: &str = "/downloads/";
/// What every zip's blob key starts with, for the sweep of expired ones.
pub const ZIP_KEY_PREFIX: &str = "bundle-";
const ZIP_SUFFIX: &str = ".zip";

/// The blob key (and file name) of a bundle's zip.
pub fn zip_key(bundle: &str) -> String {
    format!("{ZIP_KEY_PREFIX}{bundle}{ZIP_SUFFIX}")
}

/// The bundle id in a zip's file name; `None` for another file.
pub fn bundle_of_zip_key(file: &str) -> Option<&str> {
    file.strip_prefix(ZIP_KEY_PREFIX)?.strip_suffix(ZIP_SUFFIX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_travel_as_name_and_data() {
        let event = BundleEvent::Progress {
            index: 1,
            received: 10,
            total: None,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"progress","data":{"index":1,"received":10,"total":null}}"#
        );
        let (name, data) = event.to_parts();
        assert_eq!(
            (name.as_str(), &data),
            (
                "progress",
                &json!({ "index": 1, "received": 10, "total": null })
            )
        );
        assert_eq!(BundleEvent::from_parts(&name, &data).unwrap(), event);
        let failed = BundleEvent::DownloadFailed {
            index: 0,
            error: "http_status".into(),
            message: "404".into(),
        };
        assert_eq!(failed.to_parts().0, "download_failed");
    }

    #[test]
    fn a_logged_event_carries_the_logs_id_beside_name_and_data() {
        let logged: LoggedBundleEvent =
            serde_json::from_str(r#"{"id":"7-0","event":"compress","data":{"percent":50}}"#)
                .unwrap();
        assert_eq!(
            logged,
            LoggedBundleEvent {
                id: "7-0".into(),
                event: BundleEvent::Compress { percent: 50 }
            }
        );
        let absent_total: BundleEvent =
            BundleEvent::from_parts("progress", &json!({ "index": 0, "received": 0 })).unwrap();
        assert_eq!(
            absent_total,
            BundleEvent::Progress {
                index: 0,
                received: 0,
                total: None
            }
        );
    }

    #[test]
    fn an_unknown_event_is_not_a_bundle_event() {
        assert!(BundleEvent::from_parts("clock", &json!({})).is_err());
        assert!(BundleEvent::from_parts("ready", &json!({ "link": 1 })).is_err());
    }

    #[test]
    fn only_ready_and_failed_end_a_bundle() {
        assert!(
            BundleEvent::Failed {
                error: "gave_up".into(),
                message: String::new()
            }
            .ends_bundle()
        );
        assert!(!BundleEvent::Started { attempt: 2 }.ends_bundle());
    }

    #[test]
    fn the_job_is_bundle_and_urls() {
        let job = BundleJob {
            bundle: "abc".into(),
            urls: vec!["http://a/".into()],
        };
        assert_eq!(
            serde_json::to_value(&job).unwrap(),
            json!({ "bundle": "abc", "urls": ["http://a/"] })
        );
    }

    #[test]
    fn zips_are_named_after_their_bundle() {
        assert_eq!(zip_key("0123"), "bundle-0123.zip");
        assert_eq!(bundle_of_zip_key("bundle-0123.zip"), Some("0123"));
        assert_eq!(bundle_of_zip_key("other.zip"), None);
        assert!(zip_key("x").starts_with(ZIP_KEY_PREFIX));
    }
}
