//! `/v1/logs/{log}/{key}` (event logs) and `/v1/marks/{key}` (one-time marks).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/logs/{log}/{key}`: the event's name and its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendEventRequest {
    pub event: String,
    #[serde(default)]
    pub data: Value,
}

/// Event names are 1-64 of `A-Z a-z 0-9 _`.
pub fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The query of `GET /v1/logs/{log}/{key}`: events after `after`, waiting
/// up to `wait_ms` for the first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadEventsQuery {
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub wait_ms: Option<u64>,
}

/// The events read, oldest first (`E`: a stored event, or a typed one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events<E> {
    pub events: Vec<E>,
}

/// `POST /v1/marks/{key}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkRequest {
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marked {
    pub marked: bool,
}

/// `POST /v1/marks/{key}/reserve`: asking again renews the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    pub holder: String,
    pub lease_secs: u64,
}

/// The answer to a reservation of a one-time mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reservation {
    /// The caller holds the mark now (also when it held or spent it before:
    /// a retried request, e.g. by nginx on another instance, carries the
    /// same holder).
    Granted,
    /// Another holder has reserved it and not yet spent or released it.
    Busy,
    /// Spent by another holder.
    Spent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    pub reservation: Reservation,
}

/// `POST /v1/marks/{key}/spend`: the mark is then kept `ttl_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendRequest {
    pub holder: String,
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    pub spent: bool,
}

/// `POST /v1/marks/{key}/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub holder: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub released: bool,
}

/// Holders are opaque request ids: 1-128 of `A-Z a-z 0-9 . _ -`, plain
/// enough for any backend.
pub fn is_holder(holder: &str) -> bool {
    !holder.is_empty()
        && holder.len() <= 128
        && holder
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_short_and_plain() {
        assert!(is_holder("a1.B_-"));
        assert!(is_holder(&"x".repeat(128)));
        for bad in ["", "a b", "a/b", "é"] {
            assert!(!is_holder(bad), "{bad:?}");
        }
        assert!(!is_holder(&"x".repeat(129)));
    }

    #[test]
    fn event_names_are_words() {
        assert!(is_event_name("download_failed"));
        assert!(!is_event_name(""));
        assert!(!is_event_name("a-b"));
        assert!(!is_event_name(&"e".repeat(65)));
    }

    #[test]
    fn reservations_are_snake_case_words() {
        assert_eq!(
            serde_json::to_string(&Reserved {
                reservation: Reservation::Granted
            })
            .unwrap(),
            r#"{"reservation":"granted"}"#
        );
        let busy: Reserved = serde_json::from_str(r#"{"reservation":"busy"}"#).unwrap();
        assert_eq!(busy.reservation, Reservation::Busy);
    }
}
