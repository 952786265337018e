//! `/v1/docs/{collection}[/{id}]`: generic documents on allow-listed
//! collections. Documents are whatever type the side holds (`D`): a JSON
//! map in the sidecar, a judged order in the components.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The query of `GET /v1/docs/{c}`: documents with `_id > after`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    pub after: Option<String>,
    pub limit: Option<u32>,
}

impl ListQuery {
    pub fn to_query(&self) -> String {
        super::query(&[
            ("limit", self.limit.map(|v| v.to_string())),
            ("after", self.after.clone()),
        ])
    }
}

/// `POST /v1/docs/{c}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsertRequest {
    pub fields: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyRequest>,
}

/// The client's key and a fingerprint of what it asked, so that a retry
/// replays the first result and another request under the key conflicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyRequest {
    pub key: String,
    pub fingerprint: String,
}

/// `PATCH /v1/docs/{c}/{id}`: `set` applies only at `if_version`, when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    pub set: Map<String, Value>,
    pub if_version: Option<i64>,
}

/// The answer to an insert: 201 with `replayed: false`, or 200 with the
/// document an earlier request with the same key created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inserted<D> {
    pub doc: D,
    pub replayed: bool,
}

/// One document (get, update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneDoc<D> {
    pub doc: D,
}

/// A page of documents in `_id` order (list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManyDocs<D> {
    pub docs: Vec<D>,
}

/// The answer to a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: bool,
}
