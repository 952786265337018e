//! API keys and the audit trail in MongoDB: collections `api_keys` and
//! `audit_log` of the product's database, which the generic document API does
//! not list, so components cannot reach them.
//!
//! One active key per name without transactions: a key's name is claimed in
//! `api_key_names` (`_id` = name) before the key is inserted, and released
//! when it is revoked; the unique `_id` decides between racing creates.

use async_trait::async_trait;
use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use super::{AuditEntry, KeyRecord, KeyStore, Revoked, parse_scopes};
use crate::store::{StoreError, StoreResult};

const KEYS: &str = "api_keys";
const AUDIT: &str = "audit_log";
const NAMES: &str = "api_key_names";

pub struct MongoKeys {
    database: Database,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("mongodb: {error}"))
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        _ => false,
    }
}

fn optional_i64(document: &Document, field: &str) -> Option<i64> {
    match document.get(field) {
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

fn key_from_document(document: &Document) -> KeyRecord {
    let scopes = document
        .get_array("scopes")
        .map(|items| items.iter().filter_map(Bson::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    KeyRecord {
        id: document.get_str("_id").unwrap_or_default().to_owned(),
        name: document.get_str("name").unwrap_or_default().to_owned(),
        hash: document.get_str("hash").unwrap_or_default().to_owned(),
        scopes: parse_scopes(scopes),
        rate_limit: optional_i64(document, "rate_limit").and_then(|n| u32::try_from(n).ok()),
        created_ms: optional_i64(document, "created_ms").unwrap_or_default(),
        last_used_ms: optional_i64(document, "last_used_ms"),
        revoked_ms: optional_i64(document, "revoked_ms"),
    }
}

fn document_from_entry(entry: &AuditEntry) -> Document {
    let mut document = doc! {
        "at_ms": entry.at_ms,
        "actor": &entry.actor,
        "operation": &entry.operation,
        "status": i64::from(entry.status),
    };
    if let Some(target) = &entry.target {
        document.insert("target", target);
    }
    if let Some(request_id) = &entry.request_id {
        document.insert("request_id", request_id);
    }
    document
}

fn entry_from_document(document: &Document) -> AuditEntry {
    AuditEntry {
        at_ms: optional_i64(document, "at_ms").unwrap_or_default(),
        actor: document.get_str("actor").unwrap_or_default().to_owned(),
        operation: document.get_str("operation").unwrap_or_default().to_owned(),
        target: document.get_str("target").ok().map(str::to_owned),
        status: optional_i64(document, "status")
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or_default(),
        request_id: document.get_str("request_id").ok().map(str::to_owned),
    }
}

impl MongoKeys {
    /// Uses `database` (the product's), creating the indexes (idempotently).
    pub async fn open(database: Database) -> anyhow::Result<Self> {
        let keys = Self { database };
        let unique = |field: &str| {
            IndexModel::builder()
                .keys(doc! { field: 1 })
                .options(
                    IndexOptions::builder()
                        .name(format!("{field}_unique"))
                        .unique(true)
                        .build(),
                )
                .build()
        };
        for index in [unique("hash")] {
            keys.keys()
                .create_index(index)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create an index of {KEYS}: {e}"))?;
        }
        let by_time = IndexModel::builder().keys(doc! { "at_ms": 1 }).build();
        keys.audit()
            .create_index(by_time)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create an index of {AUDIT}: {e}"))?;
        Ok(keys)
    }

    fn keys(&self) -> Collection<Document> {
        self.database.collection(KEYS)
    }

    fn names(&self) -> Collection<Document> {
        self.database.collection(NAMES)
    }

    fn audit(&self) -> Collection<Document> {
        self.database.collection(AUDIT)
    }

    async fn find_key(&self, filter: Document) -> StoreResult<Vec<KeyRecord>> {
        let cursor = self
            .keys()
            .find(filter)
            .sort(doc! { "created_ms": 1, "_id": 1 })
            .await
            .map_err(unavailable)?;
        let documents: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        Ok(documents.iter().map(key_from_document).collect())
    }
}

#[async_trait]
impl KeyStore for MongoKeys {
    async fn create_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        match self
            .names()
            .insert_one(doc! { "_id": &key.name, "key_id": &key.id })
            .await
        {
            Ok(_) => {}
            Err(error) if is_duplicate_key(&error) => {
                return Err(StoreError::Invalid(
                    "an active key already has this name".into(),
                ));
            }
            Err(error) => return Err(unavailable(error)),
        }
        let mut document = doc! {
            "_id": &key.id,
            "name": &key.name,
            "hash": &key.hash,
            "scopes": scopes,
            "created_ms": key.created_ms,
        };
        if let Some(limit) = key.rate_limit {
            document.insert("rate_limit", i64::from(limit));
        }
        if let Err(error) = self.keys().insert_one(document).await {
            // Release the name so a retry can have it.
            let _ = self
                .names()
                .delete_one(doc! { "_id": &key.name, "key_id": &key.id })
                .await;
            return Err(unavailable(error));
        }
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let found = self
            .keys()
            .find_one(doc! { "hash": hash })
            .await
            .map_err(unavailable)?;
        Ok(found.as_ref().map(key_from_document))
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.find_key(doc! {}).await
    }

    async fn revoke_key(&self, id_or_name: &str, at_ms: i64) -> StoreResult<Revoked> {
        let mut found = self.find_key(doc! { "_id": id_or_name }).await?;
        if found.is_empty() {
            found = self
                .find_key(doc! { "name": id_or_name, "revoked_ms": { "$exists": false } })
                .await?;
        }
        let target = match found.len() {
            0 => return Ok(Revoked::NotFound),
            1 => found.remove(0),
            _ => {
                return Ok(Revoked::Ambiguous(
                    found.into_iter().map(|k| k.id).collect(),
                ));
            }
        };
        self.keys()
            .update_one(
                doc! { "_id": &target.id, "revoked_ms": { "$exists": false } },
                doc! { "$set": { "revoked_ms": at_ms } },
            )
            .await
            .map_err(unavailable)?;
        self.names()
            .delete_one(doc! { "_id": &target.name, "key_id": &target.id })
            .await
            .map_err(unavailable)?;
        let after = self
            .find_key(doc! { "_id": &target.id })
            .await?
            .pop()
            .ok_or_else(|| unavailable("the key vanished while being revoked"))?;
        Ok(Revoked::Done(after))
    }

    async fn touch_key(&self, id: &str, at_ms: i64) -> StoreResult<()> {
        self.keys()
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "last_used_ms": at_ms } },
            )
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.audit().insert_many(entries.iter().map(document_from_entry)).await.map(drop).map_err(unavailable)
    }

    async fn audit_since(&self, since_ms: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let cursor = self
            .audit()
            .find(doc! { "at_ms": { "$gte": since_ms } })
            .sort(doc! { "at_ms": 1, "_id": 1 })
            .limit(i64::from(limit))
            .await
            .map_err(unavailable)?;
        let documents: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        Ok(documents.iter().map(entry_from_document).collect())
    }
}
