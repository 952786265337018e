//! API keys and the audit trail, in the product's store (the embedded SQLite
//! store or MongoDB) behind one trait, pinned by the conformance suite.
//!
//! A key is stored only as the SHA-256 of its text (docs/adr/0010): the text
//! is shown once, at creation, and a lookup is by hash. Keys live apart from
//! the documents of the generic `/v1/docs` API (their own SQLite file, their
//! own MongoDB collection, neither on the API's allow-list), so no component
//! can read them. The audit trail is append-only: nothing in this trait
//! updates or deletes an entry.

pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use orders_access::Scope;
use serde::Serialize;

use super::StoreResult;

/// One API key as stored: never its text, only the text's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub hash: String,
    #[serde(serialize_with = "scope_names")]
    pub scopes: Vec<Scope>,
    /// Requests per second this key may make; the default limit when `None`.
    pub rate_limit: Option<u32>,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

impl KeyRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_ms.is_some()
    }
}

fn scope_names<S: serde::Serializer>(scopes: &[Scope], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(scopes.iter().map(|s| s.as_str()))
}

/// Scope names as stored, back into scopes; unknown names (from a newer
/// version) grant nothing.
pub fn parse_scopes<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
    names.into_iter().filter_map(Scope::parse).collect()
}

/// One accepted write or key change. Holds who, what and when, never a
/// credential or a document's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// `key:<id>` for an API key, `sub:<subject>` for a token, `cli` for `orders keys`.
    pub actor: String,
    /// e.g. `order.create`, `key.revoke`.
    pub operation: String,
    /// The order id or key id the operation was about.
    pub target: Option<String>,
    pub status: u16,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now (or already before: revoking twice is harmless).
    Done(KeyRecord),
    NotFound,
    /// A name shared by several keys: revoke by id.
    Ambiguous(Vec<String>),
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key; `Invalid` when an active key already has its name.
    async fn create_key(&self, key: &KeyRecord) -> StoreResult<()>;
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>>;
    /// Every key, oldest first.
    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// Revokes the key with this id, or the one active key with this name.
    async fn revoke_key(&self, id_or_name: &str, at_ms: i64) -> StoreResult<Revoked>;
    /// Records that the key was used (callers do this at most once a minute per key).
    async fn touch_key(&self, id: &str, at_ms: i64) -> StoreResult<()>;
    /// Appends `entries` in order, in one commit where the store allows
    /// (one transaction in SQLite, one `insertMany` in MongoDB).
    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()>;
    /// Entries at or after `since_ms`, oldest first, at most `limit`.
    async fn audit_since(&self, since_ms: i64, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}
