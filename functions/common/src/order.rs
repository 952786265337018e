//! The order document and the only ways to obtain valid ones.
//!
//! "Parse, don't validate": a `NewOrder`, `OrderPatch` or `OrderId` can only
//! be built from input that meets every rule of the contract, and parsing
//! reports every bad field at once so a client fixes its request in one go.
//! The rules themselves live in `orders-contract`, shared with the native
//! tools that judge stored documents by them.

use serde::Serialize;
use serde_json::{Map, Value};

use orders_contract::fields::{WRITABLE_FIELDS, check_fields, truncate_for_message};
pub use orders_contract::MAX_QUANTITY;

use crate::error::{ApiError, FieldError};

/// A MongoDB ObjectId in its canonical form: 24 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OrderId(String);

impl OrderId {
    /// Accepts 24 hex digits in either case and keeps them lowercase, the
    /// form the store uses.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        orders_contract::object_id::normalise(raw).map(Self).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Malformed order id {:?}: expected 24 hexadecimal characters",
                truncate_for_message(raw)
            ))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a JSON body into its object, answering 400 for what is not JSON
/// and 422 for JSON that is not an object.
pub fn parse_json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("Request body is not valid JSON: {e}"))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::unprocessable(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )])),
    }
}

/// A complete, valid order as a client submits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    fields: Map<String, Value>,
}

impl NewOrder {
    pub fn parse(input: &Map<String, Value>) -> Result<Self, ApiError> {
        let (fields, errors) = check_fields(input, true);
        if errors.is_empty() { Ok(Self { fields }) } else { Err(ApiError::unprocessable(errors)) }
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// A stable text of the normalised order: two requests with the same
    /// fingerprint would create the same order, whatever their key order or
    /// surrounding whitespace.
    pub fn fingerprint(&self) -> String {
        WRITABLE_FIELDS
            .iter()
            .map(|(name, _)| self.fields[*name].to_string())
            .collect::<Vec<_>>()
            .join("\u{1f}")
    }
}

/// A non-empty set of valid changes to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPatch {
    fields: Map<String, Value>,
}

impl OrderPatch {
    pub fn parse(input: &Map<String, Value>) -> Result<Self, ApiError> {
        if input.is_empty() {
            return Err(ApiError::unprocessable(vec![FieldError::new(
                "body",
                "must contain at least one of product, quantity, customer_name, customer_address",
            )]));
        }
        let (fields, errors) = check_fields(input, false);
        if errors.is_empty() { Ok(Self { fields }) } else { Err(ApiError::unprocessable(errors)) }
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("test input is an object")
    }

    fn valid() -> Value {
        json!({"product": " Banner ", "quantity": 3, "customer_name": "Ada", "customer_address": "1 Main St"})
    }

    fn problems(error: ApiError) -> Vec<String> {
        assert_eq!(error.status, 422);
        error.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn new_order_trims_text_fields() {
        let order = NewOrder::parse(&object(valid())).unwrap();
        assert_eq!(order.fields()["product"], "Banner");
    }

    #[test]
    fn missing_fields_are_each_reported() {
        let error = NewOrder::parse(&object(json!({"quantity": 1}))).unwrap_err();
        assert_eq!(problems(error), ["product", "customer_name", "customer_address"]);
    }

    #[test]
    fn quantity_rejects_float_string_bool_and_range() {
        for bad in [json!(5.0), json!("5"), json!(true), json!(0), json!(1_000_001), json!(null)] {
            let mut input = object(valid());
            input.insert("quantity".into(), bad.clone());
            assert_eq!(problems(NewOrder::parse(&input).unwrap_err()), ["quantity"], "{bad}");
        }
    }

    #[test]
    fn quantity_bounds_are_inclusive() {
        for good in [1, MAX_QUANTITY] {
            let mut input = object(valid());
            input.insert("quantity".into(), json!(good));
            assert!(NewOrder::parse(&input).is_ok());
        }
    }

    #[test]
    fn text_lengths_count_characters_after_trimming() {
        let mut input = object(valid());
        input.insert("product".into(), json!(format!("  {}  ", "é".repeat(200))));
        assert!(NewOrder::parse(&input).is_ok());
        input.insert("product".into(), json!("é".repeat(201)));
        assert_eq!(problems(NewOrder::parse(&input).unwrap_err()), ["product"]);
        input.insert("product".into(), json!("   "));
        assert_eq!(problems(NewOrder::parse(&input).unwrap_err()), ["product"]);
    }

    #[test]
    fn address_allows_500_characters() {
        let mut input = object(valid());
        input.insert("customer_address".into(), json!("a".repeat(500)));
        assert!(NewOrder::parse(&input).is_ok());
        input.insert("customer_address".into(), json!("a".repeat(501)));
        assert_eq!(problems(NewOrder::parse(&input).unwrap_err()), ["customer_address"]);
    }

    #[test]
    fn nul_characters_are_rejected() {
        let mut input = object(valid());
        input.insert("customer_name".into(), json!("Ada\u{0}"));
        assert_eq!(problems(NewOrder::parse(&input).unwrap_err()), ["customer_name"]);
    }

    #[test]
    fn unknown_fields_are_rejected_not_dropped() {
        let mut input = object(valid());
        input.insert("quantiy".into(), json!(2));
        assert_eq!(problems(NewOrder::parse(&input).unwrap_err()), ["quantiy"]);
        let error = OrderPatch::parse(&object(json!({"_id": "x"}))).unwrap_err();
        assert_eq!(problems(error), ["_id"]);
    }

    #[test]
    fn patch_must_not_be_empty() {
        assert_eq!(problems(OrderPatch::parse(&Map::new()).unwrap_err()), ["body"]);
    }

    #[test]
    fn patch_keeps_only_sent_fields() {
        let patch = OrderPatch::parse(&object(json!({"quantity": 7}))).unwrap();
        assert_eq!(patch.fields().len(), 1);
    }

    #[test]
    fn fingerprint_ignores_key_order_and_padding() {
        let a = NewOrder::parse(&object(valid())).unwrap();
        let b = NewOrder::parse(&object(json!({"customer_address": "1 Main St", "customer_name": "Ada", "quantity": 3, "product": "Banner"}))).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn order_id_accepts_hex_and_normalises_case() {
        assert_eq!(OrderId::parse("65A1B2C3D4E5F60718293A4B").unwrap().as_str(), "65a1b2c3d4e5f60718293a4b");
        for bad in ["", "123", "zz1b2c3d4e5f60718293a4bz", "65a1b2c3d4e5f60718293a4b0"] {
            assert_eq!(OrderId::parse(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn non_object_json_is_unprocessable_and_garbage_is_bad_request() {
        assert_eq!(parse_json_object(b"[1]").unwrap_err().status, 422);
        assert_eq!(parse_json_object(b"{").unwrap_err().status, 400);
    }
}
