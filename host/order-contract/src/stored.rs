//! Orders as a store holds them, served and judged by the contract.
//!
//! The old Flask service validated nothing: its POST stored whatever four
//! values it was sent, its PUT overwrote the fields it was not sent with
//! `null`, and it never wrote timestamps or versions. Those documents stay
//! readable: every stored document becomes a [`StoredOrder`], whose served
//! form keeps each stored value as it is, fills what can be derived without
//! guessing (`created_at`/`updated_at` from the ObjectId's timestamp,
//! version 1), and lists under [`PROBLEMS_FIELD`] every field a client sees
//! off the contract. The same judgement tells `orders migrate` what it may
//! repair without a person ([`StoredOrder::repair`]).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::fields::{FieldError, StoredValue, WRITABLE_FIELDS};
use crate::object_id::timestamp_secs;
use crate::time::{format_unix_millis, is_rfc3339};

/// Where a served order lists the fields that do not meet the contract;
/// absent on every order that meets it.
pub const PROBLEMS_FIELD: &str = "contract_problems";

pub(crate) const TIMESTAMPS: [&str; 2] = ["created_at", "updated_at"];

/// The ETag of an order at `version`.
pub(crate) fn etag_of(version: i64) -> String {
    format!("\"{version}\"")
}

/// A stored `version` that counts: an integer of at least 1.
pub(crate) fn version_of(value: &Value) -> Option<i64> {
    value.as_i64().filter(|version| *version >= 1)
}

/// One way a stored document differs from the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub field: String,
    pub problem: String,
    /// What `orders migrate --apply` writes in its place: the same meaning in
    /// the contract's form. `None` when only a person can say.
    pub fix: Option<Value>,
    /// Whether clients see the field off the contract. A missing timestamp
    /// or version is served derived, so it only matters to the store.
    pub visible: bool,
}

/// What `orders migrate --apply` writes to one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Repair {
    /// Field values to set: lossless conversions and derived timestamps.
    pub set: Map<String, Value>,
    /// The version the document has after the repair: the served one, or one
    /// more when clients will see different values (so ETags move).
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredOrder {
    id: String,
    version: i64,
    stored_version: Option<i64>,
    /// The served fields, in the order the old service served them.
    served: Vec<(String, Value)>,
    findings: Vec<Finding>,
}

impl StoredOrder {
    /// Judges a document as the sidecar returns it: stored fields plus `_id`
    /// (24 hex) and, unless it predates versions, `version`.
    pub fn from_stored(mut doc: Map<String, Value>) -> Self {
        let id = match doc.remove("_id") {
            Some(Value::String(id)) => id,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let mut findings = Vec::new();
        let mut served = Vec::with_capacity(doc.len() + 2);
        served.push(("_id".to_owned(), Value::String(id.clone())));
        for (name, rule) in WRITABLE_FIELDS {
            let Some(value) = doc.remove(name) else {
                findings.push(Finding {
                    field: name.into(),
                    problem: "is required".into(),
                    fix: None,
                    visible: true,
                });
                continue;
            };
            let fix = match rule.judge_stored(&value) {
                StoredValue::Valid => None,
                StoredValue::Convertible(converted) => Some(Some(converted)),
                StoredValue::Invalid => Some(None),
            };
            if let Some(fix) = fix {
                findings.push(Finding {
                    field: name.into(),
                    problem: rule.problem(),
                    fix,
                    visible: true,
                });
            }
            served.push((name.to_owned(), value));
        }
        let created_default =
            timestamp_secs(&id).map(|secs| Value::String(format_unix_millis(secs * 1000)));
        let (created_at, created_in_contract_form) = judge_timestamp(
            "created_at",
            doc.remove("created_at"),
            created_default,
            &mut findings,
        );
        let (updated_at, _) = judge_timestamp(
            "updated_at",
            doc.remove("updated_at"),
            created_in_contract_form,
            &mut findings,
        );
        served.extend(created_at.map(|value| ("created_at".to_owned(), value)));
        served.extend(updated_at.map(|value| ("updated_at".to_owned(), value)));
        let stored_version = doc.get("version").and_then(version_of);
        let version = stored_version.unwrap_or(1);
        match doc.remove("version") {
            None => findings.push(Finding {
                field: "version".into(),
                problem: "is missing (stored before versions existed); served as 1".into(),
                fix: Some(Value::from(1)),
                visible: false,
            }),
            Some(_) if stored_version.is_some() => {}
            Some(other) => {
                findings.push(Finding {
                    field: "version".into(),
                    problem: "must be an integer of at least 1".into(),
                    fix: None,
                    visible: true,
                });
                doc.insert("version".into(), other);
            }
        }
        if !doc.contains_key("version") {
            served.push(("version".to_owned(), Value::from(version)));
        }
        for (name, value) in doc {
            if name != "version" {
                findings.push(Finding {
                    field: name.clone(),
                    problem: "is not a field of an order".into(),
                    fix: None,
                    visible: true,
                });
            }
            served.push((name, value));
        }
        Self {
            id,
            version,
            stored_version,
            served,
            findings,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version an `If-Match` is compared with: the stored one, or 1.
    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn etag(&self) -> String {
        etag_of(self.version)
    }

    pub fn location(&self) -> String {
        format!("/orders/{}", self.id)
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Whether clients see every field in the contract's form.
    pub fn meets_contract(&self) -> bool {
        self.findings.iter().all(|finding| !finding.visible)
    }

    pub fn contract_problems(&self) -> Vec<FieldError> {
        self.findings
            .iter()
            .filter(|finding| finding.visible)
            .map(|finding| FieldError::new(finding.field.clone(), finding.problem.clone()))
            .collect()
    }

    /// Whether some finding can only be settled by a person.
    pub fn needs_a_person(&self) -> bool {
        self.findings.iter().any(|finding| finding.fix.is_none())
    }

    /// The stored version, absent on documents written before versions.
    pub fn stored_version(&self) -> Option<i64> {
        self.stored_version
    }

    /// The lossless part of bringing the document to the contract, if any.
    pub fn repair(&self) -> Option<Repair> {
        let fixable = || self.findings.iter().filter(|finding| finding.fix.is_some());
        fixable().next()?;
        let set: Map<String, Value> = fixable()
            .filter(|finding| finding.field != "version")
            .filter_map(|finding| Some((finding.field.clone(), finding.fix.clone()?)))
            .collect();
        let changes_what_clients_see = fixable().any(|finding| finding.visible);
        let version = if changes_what_clients_see {
            self.version + 1
        } else {
            self.version
        };
        Some(Repair { set, version })
    }

    /// The order as the API answers it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A stored timestamp: kept when it is RFC 3339, else served as stored and
/// reported; a missing or null one is served as `default`. Returns what is
/// served and the value in the contract's form, once repaired, if known.
fn judge_timestamp(
    field: &str,
    stored: Option<Value>,
    default: Option<Value>,
    findings: &mut Vec<Finding>,
) -> (Option<Value>, Option<Value>) {
    debug_assert!(TIMESTAMPS.contains(&field));
    let problem = "must be an RFC 3339 date-time string";
    match stored {
        Some(Value::String(text)) if is_rfc3339(&text) => {
            (Some(Value::String(text.clone())), Some(Value::String(text)))
        }
        None | Some(Value::Null) => {
            let visible = default.is_none();
            let problem = if visible {
                "is missing"
            } else {
                "is missing; served as derived from the order's id"
            };
            findings.push(Finding {
                field: field.into(),
                problem: problem.into(),
                fix: default.clone(),
                visible,
            });
            (default.clone(), default)
        }
        Some(other) => {
            let fix = date_wrapper_as_rfc3339(&other);
            findings.push(Finding {
                field: field.into(),
                problem: problem.into(),
                fix: fix.clone(),
                visible: true,
            });
            (Some(other), fix)
        }
    }
}

/// A BSON date in Extended JSON (`{"$date": "…"}` or `{"$date": {"$numberLong": "…"}}`) as RFC 3339.
fn date_wrapper_as_rfc3339(value: &Value) -> Option<Value> {
    let inner = value
        .as_object()
        .filter(|wrapper| wrapper.len() == 1)?
        .get("$date")?;
    let text = match inner {
        Value::String(iso) if is_rfc3339(iso) => iso.clone(),
        Value::Object(long) => format_unix_millis(long.get("$numberLong")?.as_str()?.parse().ok()?),
        Value::Number(millis) => format_unix_millis(millis.as_i64()?),
        _ => return None,
    };
    Some(Value::String(text))
}

impl Serialize for StoredOrder {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let problems = self.contract_problems();
        let mut map = serializer
            .serialize_map(Some(self.served.len() + usize::from(!problems.is_empty())))?;
        for (name, value) in &self.served {
            if name != PROBLEMS_FIELD {
                map.serialize_entry(name, value)?;
            }
        }
        if !problems.is_empty() {
            map.serialize_entry(PROBLEMS_FIELD, &problems)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StoredOrder {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::deserialize(deserializer).map(Self::from_stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "65a1b2c3d4e5f60718293a4b";

    fn stored(value: Value) -> StoredOrder {
        StoredOrder::from_stored(value.as_object().cloned().expect("object"))
    }

    fn current() -> Value {
        json!({"_id": ID, "product": "Banner", "quantity": 3, "customer_name": "Ada", "customer_address": "1 Main St",
               "created_at": "2024-01-12T21:17:23.000Z", "updated_at": "2024-01-13T08:00:00.000Z", "version": 4})
    }

    #[test]
    fn a_current_order_is_served_as_stored_in_the_old_field_order() {
        let order = stored(current());
        assert!(order.findings().is_empty());
        assert_eq!(order.repair(), None);
        let expected = r#"{"_id":"65a1b2c3d4e5f60718293a4b","product":"Banner","quantity":3,"customer_name":"Ada","customer_address":"1 Main St","created_at":"2024-01-12T21:17:23.000Z","updated_at":"2024-01-13T08:00:00.000Z","version":4}"#;
        assert_eq!(serde_json::to_string(&order).unwrap(), expected);
        assert_eq!(order.etag(), "\"4\"");
    }

    #[test]
    fn what_the_old_post_stored_gets_timestamps_from_its_id_and_version_one() {
        let order = stored(
            json!({"_id": ID, "product": "Banner", "quantity": 3, "customer_name": "Ada", "customer_address": "1 Main St"}),
        );
        let served = order.to_value();
        assert_eq!(served["created_at"], "2024-01-12T21:44:35.000Z");
        assert_eq!(served["updated_at"], served["created_at"]);
        assert_eq!(served["version"], 1);
        assert!(order.meets_contract());
        assert!(served.get(PROBLEMS_FIELD).is_none());
        let repair = order.repair().expect("a backfill");
        assert_eq!(repair.version, 1, "nothing a client sees changes");
        assert_eq!(
            repair.set.keys().collect::<Vec<_>>(),
            ["created_at", "updated_at"]
        );
        assert_eq!(order.stored_version(), None);
    }

    #[test]
    fn what_the_old_put_nulled_is_served_as_null_and_reported() {
        let order = stored(
            json!({"_id": ID, "product": "Banner", "quantity": null, "customer_name": null, "customer_address": "1 Main St"}),
        );
        assert_eq!(order.to_value()["quantity"], Value::Null);
        let fields: Vec<_> = order
            .contract_problems()
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["quantity", "customer_name"]);
        assert!(order.needs_a_person());
    }

    #[test]
    fn a_numeric_string_quantity_is_served_as_stored_and_repaired_to_an_integer() {
        let order = stored(
            json!({"_id": ID, "product": "Banner", "quantity": "7", "customer_name": "Ada", "customer_address": "1 Main St"}),
        );
        assert_eq!(order.to_value()["quantity"], "7");
        assert_eq!(order.to_value()[PROBLEMS_FIELD][0]["field"], "quantity");
        assert!(!order.needs_a_person());
        let repair = order.repair().unwrap();
        assert_eq!(repair.set["quantity"], 7);
        assert_eq!(
            repair.version, 2,
            "clients see a different value, so the ETag moves"
        );
    }

    #[test]
    fn floats_bools_objects_and_long_strings_need_a_person() {
        let long = "x".repeat(10_000);
        let order = stored(
            json!({"_id": ID, "product": long, "quantity": 2.5, "customer_name": true, "customer_address": {"street": "Main"}}),
        );
        assert_eq!(order.contract_problems().len(), 4);
        assert!(order.needs_a_person());
        assert_eq!(order.to_value()["customer_address"]["street"], "Main");
        assert_eq!(order.repair().unwrap().set.len(), 2, "only the timestamps");
    }

    #[test]
    fn unknown_fields_are_kept_and_reported() {
        let mut doc = current();
        doc["coupon"] = json!("SPRING");
        let order = stored(doc);
        assert_eq!(order.to_value()["coupon"], "SPRING");
        assert_eq!(
            order.contract_problems(),
            vec![FieldError::new("coupon", "is not a field of an order")]
        );
        assert_eq!(order.repair(), None, "nothing is deleted");
    }

    #[test]
    fn bson_dates_convert_to_rfc3339() {
        let mut doc = current();
        doc["created_at"] = json!({"$date": "2024-01-12T21:17:23Z"});
        doc["updated_at"] = json!({"$date": {"$numberLong": "1705094243000"}});
        let repair = stored(doc).repair().unwrap();
        assert_eq!(repair.set["created_at"], "2024-01-12T21:17:23Z");
        assert_eq!(repair.set["updated_at"], "2024-01-12T21:17:23.000Z");
        assert_eq!(repair.version, 5);
    }

    #[test]
    fn a_missing_updated_at_follows_a_created_at_that_is_repaired_in_the_same_pass() {
        let order = stored(
            json!({"_id": ID, "product": "Banner", "quantity": 3, "customer_name": "Ada", "customer_address": "1 Main St",
                                  "created_at": {"$date": "2024-01-12T21:17:23Z"}}),
        );
        let repair = order.repair().unwrap();
        assert_eq!(repair.set["updated_at"], "2024-01-12T21:17:23Z");
        assert!(!order.needs_a_person());
    }

    #[test]
    fn a_missing_field_is_reported_and_not_invented() {
        let order =
            stored(json!({"_id": ID, "product": "Banner", "quantity": 1, "customer_name": "Ada"}));
        assert!(order.to_value().get("customer_address").is_none());
        assert_eq!(
            order.contract_problems(),
            vec![FieldError::new("customer_address", "is required")]
        );
    }

    #[test]
    fn deserialising_never_fails_on_an_object() {
        let order: StoredOrder =
            serde_json::from_str(r#"{"_id": "65a1b2c3d4e5f60718293a4b", "version": "x"}"#).unwrap();
        assert_eq!(order.version(), 1);
        assert!(order.needs_a_person());
    }
}
