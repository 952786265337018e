//! `/v1/reports/{c}/nonconforming`: which served documents do not meet the
//! components' contract. Ids and field names only: values may be customer
//! data and stay out of logs.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonconformingReport {
    pub documents: Vec<NonconformingDocument>,
}

impl NonconformingReport {
    /// More than a page of documents (and the one more) is never served at once.
    pub const MAX_DOCUMENTS: usize = crate::page::MAX_SIDECAR_PAGE as usize;
    pub const MAX_FIELDS: usize = 64;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonconformingDocument {
    pub id: String,
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub recorded: usize,
}
