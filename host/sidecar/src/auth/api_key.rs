//! The text of an API key, and its creation.
//!
//! `ordk_` + 64 hex digits of 32 random bytes (256 bits from the OS's
//! generator). The prefix lets secret scanners and people recognise a leaked
//! key; the entropy is why a plain SHA-256 is the right hash (docs/adr/0010):
//! nobody can guess 2^256 inputs, so a slow password hash would only make
//! every request slower, and a fast deterministic hash lets the store find a
//! key by its hash with an index.

use orders_access::{KEY_PREFIX, Scope};
use sha2::{Digest, Sha256};

use super::clock::now_ms;
use crate::store::StoreResult;
use crate::store::keys::{AuditEntry, KeyRecord, KeyStore};

/// The hash under which a key's text is stored and looked up.
pub fn hash_key(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether `text` has the shape of one of our keys (checked before any lookup).
pub fn looks_like_key(text: &str) -> bool {
    text.strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn new_key_text() -> String {
    format!("{KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

fn new_key_id() -> String {
    format!("key_{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// A key just created: the record stored, and the text, which exists only here.
pub struct CreatedKey {
    pub record: KeyRecord,
    pub text: String,
}

/// Names are what people revoke by: short, printable, no spaces or commas.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key name {name:?} must be 1-64 of A-Z a-z 0-9 - _ . : @"
        ))
    }
}

/// Creates and stores a key, and records its creation in the audit trail.
pub async fn create_key(
    keys: &dyn KeyStore,
    name: &str,
    scopes: Vec<Scope>,
    rate_limit: Option<u32>,
    actor: &str,
) -> StoreResult<CreatedKey> {
    let text = new_key_text();
    let record = KeyRecord {
        id: new_key_id(),
        name: name.to_owned(),
        hash: hash_key(&text),
        scopes,
        rate_limit,
        created_ms: now_ms(),
        last_used_ms: None,
        revoked_ms: None,
    };
    keys.create_key(&record).await?;
    keys.append_audit(&[AuditEntry {
        at_ms: record.created_ms,
        actor: actor.to_owned(),
        operation: "key.create".into(),
        target: Some(record.id.clone()),
        status: 201,
        request_id: None,
    }])
    .await?;
    Ok(CreatedKey { record, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_has_the_prefix_and_256_bits() {
        let text = new_key_text();
        assert!(looks_like_key(&text), "{text}");
        assert_ne!(text, new_key_text());
        assert!(!looks_like_key("ordk_short"));
        assert!(!looks_like_key(&text.replace(KEY_PREFIX, "ghp_")));
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ci-deploy").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("a,b").is_err());
    }
}
