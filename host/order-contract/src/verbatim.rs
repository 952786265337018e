//! Stored orders that can be served byte for byte as the store returned them.
//!
//! Judging a document ([`StoredOrder::from_stored`]) builds it anew: a map of
//! owned values, the served fields, then the JSON text again. For a document
//! that meets every rule that work changes nothing: its served form is its
//! stored form. [`Verbatim::judge`] recognises exactly those documents from
//! the borrowed text, reading only the id and the version and checking each
//! field with the same rules, so a component can wrap the store's bytes
//! instead of decoding and re-encoding them. Anything else (a missing
//! timestamp, an unknown field, a value off the contract, even a key written
//! with escapes) is left to `from_stored`, so the fast path never changes what
//! a client sees.
//!
//! [`StoredOrder::from_stored`]: crate::StoredOrder::from_stored

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::fields::WRITABLE_FIELDS;
use crate::stored::{TIMESTAMPS, version_of};
use crate::time::is_rfc3339;

/// The fields besides the writable ones that a conforming document holds.
const ID: &str = "_id";
const VERSION: &str = "version";

/// A stored order whose served form is its stored text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbatim<'a> {
    id: &'a str,
    version: i64,
    text: &'a str,
}

impl<'a> Verbatim<'a> {
    /// The document, if it meets the contract with nothing to derive or
    /// report (what `from_stored` would judge without a single finding).
    pub fn judge(stored: &'a RawValue) -> Option<Self> {
        let fields: BTreeMap<&'a str, &'a RawValue> = serde_json::from_str(stored.get()).ok()?;
        if fields.len() != WRITABLE_FIELDS.len() + TIMESTAMPS.len() + 2 {
            return None;
        }
        for (name, rule) in WRITABLE_FIELDS {
            let value: Value = serde_json::from_str(fields.get(name)?.get()).ok()?;
            rule.check(&value).ok()?;
        }
        for name in TIMESTAMPS {
            let text: &str = serde_json::from_str(fields.get(name)?.get()).ok()?;
            is_rfc3339(text).then_some(())?;
        }
        let id: &'a str = serde_json::from_str(fields.get(ID)?.get()).ok()?;
        let version = version_of(&serde_json::from_str(fields.get(VERSION)?.get()).ok()?)?;
        Some(Self { id, version, text: stored.get() })
    }

    pub fn id(&self) -> &'a str {
        self.id
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// The served JSON object, exactly as stored.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The ETag of the served order, as [`crate::StoredOrder::etag`] gives it.
    pub fn etag(&self) -> String {
        crate::stored::etag_of(self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredOrder;
    use serde_json::json;

    fn conforming() -> Value {
        json!({"_id": "65a1b2c3d4e5f60718293a4b", "product": "Banner", "quantity": 3, "customer_name": "Ada",
               "customer_address": "1 Main St", "created_at": "2024-01-12T21:17:23.000Z",
               "updated_at": "2024-01-13T08:00:00.000Z", "version": 4})
    }

    fn with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
        let mut doc = conforming();
        change(doc.as_object_mut().unwrap());
        doc.to_string()
    }

    /// Stored texts covering each way a document can be off the contract,
    /// and texts whose JSON spelling differs from what serde_json writes.
    fn corpus() -> Vec<String> {
        let mut texts = vec![
            conforming().to_string(),
            // Escapes, spacing and key order the store may produce.
            r#"{ "version":4, "_id":"65a1b2c3d4e5f60718293a4b","product":"Ban\u006eer","quantity":3,"customer_name":"Ada",
                "customer_address":"1 Main St","created_at":"2024-01-12T21:17:23.000Z","updated_at":"2024-01-13T08:00:00.000Z"}"#
                .to_owned(),
            // A key spelled with an escape: the fast path declines, the judgement still serves it.
            r#"{"_id":"65a1b2c3d4e5f60718293a4b","pro\u0064uct":"Banner","quantity":3,"customer_name":"Ada",
                "customer_address":"1 Main St","created_at":"2024-01-12T21:17:23.000Z","updated_at":"2024-01-13T08:00:00.000Z","version":4}"#
                .to_owned(),
            // A duplicated key: the last one counts for both.
            r#"{"_id":"65a1b2c3d4e5f60718293a4b","product":"Banner","quantity":3,"customer_name":"Ada","quantity":0,
                "customer_address":"1 Main St","created_at":"2024-01-12T21:17:23.000Z","updated_at":"2024-01-13T08:00:00.000Z","version":4}"#
                .to_owned(),
        ];
        for field in ["product", "quantity", "customer_name", "customer_address", "created_at", "updated_at", "version", "_id"] {
            texts.push(with(|doc| drop(doc.remove(field))));
            texts.push(with(|doc| drop(doc.insert(field.into(), Value::Null))));
        }
        for (field, value) in [
            ("quantity", json!("3")),
            ("quantity", json!(3.0)),
            ("quantity", json!(0)),
            ("quantity", json!({"$numberLong": "3"})),
            ("product", json!("")),
            ("product", json!(7)),
            ("customer_name", json!("x".repeat(201))),
            ("created_at", json!({"$date": "2024-01-12T21:17:23Z"})),
            ("updated_at", json!("yesterday")),
            ("version", json!(0)),
            ("version", json!(4.0)),
            ("version", json!("4")),
            ("_id", json!({"$oid": "65a1b2c3d4e5f60718293a4b"})),
            ("_id", json!(7)),
            ("notes", json!("an extra field")),
            ("contract_problems", json!([])),
        ] {
            texts.push(with(|doc| drop(doc.insert(field.into(), value))));
        }
        texts
    }

    #[test]
    fn the_fast_path_takes_exactly_the_documents_judged_without_findings_and_serves_them_alike() {
        let mut verbatim = 0;
        for text in corpus() {
            let raw: Box<RawValue> = serde_json::from_str(&text).unwrap();
            let judged = StoredOrder::from_stored(serde_json::from_str(&text).unwrap());
            match Verbatim::judge(&raw) {
                Some(fast) => {
                    verbatim += 1;
                    assert!(judged.findings().is_empty(), "{text}: {:?}", judged.findings());
                    let served: Value = serde_json::from_str(fast.text()).unwrap();
                    assert_eq!(served, judged.to_value(), "{text}");
                    assert_eq!((fast.id(), fast.version(), fast.etag()), (judged.id(), judged.version(), judged.etag()));
                }
                // Declining is always safe: the judgement serves the document.
                None => {}
            }
        }
        assert_eq!(verbatim, 2, "the conforming document in two spellings");
    }
}
