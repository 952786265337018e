//! The four writable fields of an order and their rules, used both to
//! validate what a client sends and to judge what a store holds.

use serde::Serialize;
use serde_json::{Map, Value};

/// A field that does not meet its rule, and why, in words a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

pub const MAX_QUANTITY: i64 = 1_000_000;

/// The writable fields and their rules, in the order errors are reported
/// and orders are served (the old service's order).
pub const WRITABLE_FIELDS: [(&str, FieldRule); 4] = [
    ("product", FieldRule::Text { max_chars: 200 }),
    ("quantity", FieldRule::Quantity),
    ("customer_name", FieldRule::Text { max_chars: 200 }),
    ("customer_address", FieldRule::Text { max_chars: 500 }),
];

#[derive(Debug, Clone, Copy)]
pub enum FieldRule {
    Text { max_chars: usize },
    Quantity,
}

/// What a stored value is worth under its rule.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredValue {
    Valid,
    /// Off the contract, but one value means the same and meets it (`"7"` → `7`).
    Convertible(Value),
    /// Off the contract, and only a person can say what it should be.
    Invalid,
}

impl FieldRule {
    /// What a client is told when a value breaks the rule.
    pub fn problem(self) -> String {
        match self {
            FieldRule::Text { max_chars } => {
                format!("must be a string of 1 to {max_chars} characters")
            }
            FieldRule::Quantity => format!("must be an integer between 1 and {MAX_QUANTITY}"),
        }
    }

    /// The stored form of a valid request value (text trimmed), or the problem.
    pub fn check(self, value: &Value) -> Result<Value, String> {
        match self {
            FieldRule::Text { max_chars } => {
                let Value::String(text) = value else {
                    return Err(self.problem());
                };
                if text.contains('\0') {
                    return Err("must not contain NUL characters".to_owned());
                }
                let trimmed = text.trim();
                let chars = trimmed.chars().count();
                if chars == 0 || chars > max_chars {
                    return Err(self.problem());
                }
                Ok(Value::String(trimmed.to_owned()))
            }
            // serde_json keeps `5.0` as a float, so only true integers pass.
            FieldRule::Quantity => match value.as_i64() {
                Some(q) if (1..=MAX_QUANTITY).contains(&q) => Ok(Value::from(q)),
                _ => Err(self.problem()),
            },
        }
    }

    /// Judges a value a store holds. Stored text is served as stored, so
    /// surrounding blanks do not count against it; a quantity the old
    /// service let through as `"7"`, `7.0` or a BSON decimal converts
    /// without loss, anything else (`2.5`, `true`, `null`) does not.
    pub fn judge_stored(self, value: &Value) -> StoredValue {
        if self.check(value).is_ok() {
            return StoredValue::Valid;
        }
        let FieldRule::Quantity = self else {
            return StoredValue::Invalid;
        };
        let integral = match value {
            Value::Number(number) => number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64),
            Value::String(text) => text.trim().parse::<i64>().ok(),
            // Extended JSON's numeric wrappers: `{"$numberDecimal": "7"}` and kin.
            Value::Object(wrapper) if wrapper.len() == 1 => {
                wrapper
                    .iter()
                    .next()
                    .and_then(|(key, inner)| match (key.as_str(), inner) {
                        (
                            "$numberDecimal" | "$numberLong" | "$numberInt" | "$numberDouble",
                            Value::String(text),
                        ) => exact_integer(text),
                        _ => None,
                    })
            }
            _ => None,
        };
        match integral {
            Some(q) if (1..=MAX_QUANTITY).contains(&q) => StoredValue::Convertible(Value::from(q)),
            _ => StoredValue::Invalid,
        }
    }
}

/// `"7"`, `"7.0"`, `"7E0"` → 7; `"7.5"` → none.
fn exact_integer(text: &str) -> Option<i64> {
    if let Ok(integer) = text.parse::<i64>() {
        return Some(integer);
    }
    let float = text.parse::<f64>().ok()?;
    (float.fract() == 0.0 && float.abs() < 9.0e15).then_some(float as i64)
}

pub fn is_writable(name: &str) -> bool {
    WRITABLE_FIELDS.iter().any(|(known, _)| *known == name)
}

/// Checks the fields present in `input` and collects the valid ones; every
/// unknown or invalid field becomes one entry of the returned error list.
pub fn check_fields(
    input: &Map<String, Value>,
    require_all: bool,
) -> (Map<String, Value>, Vec<FieldError>) {
    let mut valid = Map::new();
    let mut errors = Vec::new();
    for (name, rule) in WRITABLE_FIELDS {
        match input.get(name) {
            Some(value) => match rule.check(value) {
                Ok(stored) => {
                    valid.insert(name.to_owned(), stored);
                }
                Err(problem) => errors.push(FieldError::new(name, problem)),
            },
            None if require_all => errors.push(FieldError::new(name, "is required")),
            None => {}
        }
    }
    for name in input.keys() {
        if !is_writable(name) {
            errors.push(FieldError::new(
                truncate_for_message(name),
                "is not a field of an order",
            ));
        }
    }
    (valid, errors)
}

/// At most 40 characters of client text, for messages.
pub fn truncate_for_message(raw: &str) -> String {
    raw.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_quantities_that_convert_without_loss() {
        for (stored, converted) in [
            (json!("7"), 7),
            (json!(" 7 "), 7),
            (json!(7.0), 7),
            (json!({"$numberDecimal": "7"}), 7),
            (json!({"$numberDecimal": "7.00"}), 7),
        ] {
            assert_eq!(
                FieldRule::Quantity.judge_stored(&stored),
                StoredValue::Convertible(json!(converted)),
                "{stored}"
            );
        }
    }

    #[test]
    fn stored_quantities_only_a_person_can_fix() {
        for stored in [
            json!(2.5),
            json!("2.5"),
            json!(true),
            json!(null),
            json!(0),
            json!("0"),
            json!(2_000_000),
            json!({"n": 1}),
            json!([7]),
            json!("seven"),
        ] {
            assert_eq!(
                FieldRule::Quantity.judge_stored(&stored),
                StoredValue::Invalid,
                "{stored}"
            );
        }
    }

    #[test]
    fn stored_text_is_judged_after_trimming_and_never_converted() {
        let rule = FieldRule::Text { max_chars: 200 };
        assert_eq!(rule.judge_stored(&json!(" Banner ")), StoredValue::Valid);
        for stored in [
            json!(null),
            json!(12),
            json!(""),
            json!("x".repeat(201)),
            json!({"a": 1}),
        ] {
            assert_eq!(rule.judge_stored(&stored), StoredValue::Invalid, "{stored}");
        }
    }
}
