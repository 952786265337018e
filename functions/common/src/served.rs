//! Orders on their way from the sidecar to the client.
//!
//! The sidecar answers with the stored documents' JSON text. A document that
//! meets the contract is served exactly as stored (`orders_contract::Verbatim`),
//! so its bytes are wrapped into the answer without being decoded into values
//! and encoded again; any other is judged (`StoredOrder`), which derives what
//! it lacks and lists its problems, and is reported to the sidecar.

use orders_contract::{StoredOrder, Verbatim};
use orders_vocabulary::api::NonconformingDocument;
use serde::{Serialize, Serializer};
use serde_json::value::{RawValue, to_raw_value};

use crate::error::ApiError;

/// One order as it goes to the client, with what its headers need.
#[derive(Debug)]
pub struct ServedOrder {
    id: String,
    version: i64,
    etag: String,
    json: Box<RawValue>,
    /// Its fields off the contract, for the sidecar's report; `None` when it meets it.
    nonconforming: Option<NonconformingDocument>,
}

impl ServedOrder {
    /// Serves a stored document: verbatim when it meets the contract, judged otherwise.
    pub fn from_stored(stored: Box<RawValue>) -> Result<Self, ApiError> {
        if let Some(verbatim) = Verbatim::judge(&stored) {
            let (id, version, etag) = (verbatim.id().to_owned(), verbatim.version(), verbatim.etag());
            return Ok(Self { id, version, etag, json: stored, nonconforming: None });
        }
        let order: StoredOrder = serde_json::from_str(stored.get()).map_err(unreadable)?;
        let nonconforming = (!order.meets_contract()).then(|| NonconformingDocument {
            id: order.id().to_owned(),
            fields: order.contract_problems().into_iter().map(|problem| problem.field).collect(),
        });
        let json = to_raw_value(&order).map_err(unreadable)?;
        Ok(Self { id: order.id().to_owned(), version: order.version(), etag: order.etag(), json, nonconforming })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version If-Match compares with.
    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn etag(&self) -> &str {
        &self.etag
    }

    pub fn location(&self) -> String {
        format!("/orders/{}", self.id)
    }

    pub fn nonconforming(&self) -> Option<&NonconformingDocument> {
        self.nonconforming.as_ref()
    }
}

/// Written as its JSON text, unchanged.
impl Serialize for ServedOrder {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

/// `{"message"?, "order"}`: how create, get and update answer with one order.
#[derive(Serialize)]
pub struct OneOrder<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    pub order: &'a ServedOrder,
}

/// `{"orders", "next"}`: a page of orders and the cursor of the next one.
#[derive(Serialize)]
pub struct OrderPage<'a> {
    pub orders: &'a [ServedOrder],
    pub next: Option<&'a str>,
}

fn unreadable(error: serde_json::Error) -> ApiError {
    ApiError::unavailable(format!("The store gave an unreadable answer: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn served(doc: Value) -> ServedOrder {
        ServedOrder::from_stored(to_raw_value(&doc).unwrap()).unwrap()
    }

    #[test]
    fn a_conforming_order_keeps_its_stored_bytes() {
        let text = r#"{"_id":"65a1b2c3d4e5f60718293a4b","version":2,"product":"Banner","quantity":3,"customer_name":"Ada","customer_address":"1 Main St","created_at":"2024-01-12T21:17:23.000Z","updated_at":"2024-01-13T08:00:00.000Z"}"#;
        let order = ServedOrder::from_stored(RawValue::from_string(text.to_owned()).unwrap()).unwrap();
        let answer = OneOrder { message: None, order: &order };
        assert_eq!(serde_json::to_string(&answer).unwrap(), format!(r#"{{"order":{text}}}"#));
        assert_eq!((order.id(), order.etag(), order.nonconforming().is_none()), ("65a1b2c3d4e5f60718293a4b", "\"2\"", true));
    }

    #[test]
    fn an_order_the_old_service_wrote_is_judged_and_reported() {
        let order = served(json!({"_id": "65a1b2c3d4e5f60718293a4b", "product": "Banner", "quantity": "3",
                                  "customer_name": "Ada", "customer_address": "1 Main St"}));
        let served: Value = serde_json::to_value(&order).unwrap();
        assert_eq!(served["version"], 1);
        assert_eq!(served["created_at"], "2024-01-12T21:44:35.000Z");
        assert_eq!(served["contract_problems"][0]["field"], "quantity");
        assert_eq!(order.nonconforming().map(|d| d.fields.clone()), Some(vec!["quantity".to_owned()]));
    }
}
