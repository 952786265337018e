//! The sidecar API, version 1 (`docs/sidecar-api.md`): the body of every
//! request and answer, as the components send and read them and as the
//! sidecar reads and writes them. Request bodies refuse unknown fields, so
//! a misspelt field is a 4xx, not silently ignored.

mod docs;
mod error;
mod logs;
mod reports;
mod streams;

pub use docs::*;
pub use error::*;
pub use logs::*;
pub use reports::*;
pub use streams::*;

use serde::{Deserialize, Serialize};

/// `GET /v1/ready`: the store answers, and which backends serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub status: String,
    pub store: String,
    pub cache: String,
}

/// The query of `GET /v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub since_ms: Option<i64>,
    pub limit: Option<u32>,
}

impl AuditQuery {
    pub fn to_query(&self) -> String {
        query(&[
            ("since_ms", self.since_ms.map(|v| v.to_string())),
            ("limit", self.limit.map(|v| v.to_string())),
        ])
    }
}

/// `name=value` pairs of the given values, joined with `&`; the values are
/// numbers or ids, which need no escaping.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let given: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|value| format!("{name}={value}")))
        .collect();
    given.join("&")
}
