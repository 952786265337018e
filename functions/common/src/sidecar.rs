//! The typed client of the sidecar's internal API (`docs/sidecar-api.md`).
//!
//! Components reach the sidecar over outbound HTTP, the one door Spin gives
//! them; its URL and bearer token are Spin variables so the same component
//! runs beside a local sidecar or a remote one over TLS. The bodies are
//! `orders_vocabulary::api`'s, the ones the sidecar reads and writes.

use orders_vocabulary::api::{
    Deleted, ErrorBody, IdempotencyRequest, InsertRequest, Inserted, ListQuery, ManyDocs, NonconformingDocument, NonconformingReport, OneDoc,
    Ready, UpdateRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use spin_sdk::http::{Method, Request, Response, send};

use crate::access::{Access, client_address, refusal};
use crate::error::ApiError;
use crate::order::{NewOrder, OrderId};
use crate::request::IdempotencyKey;
use crate::served::ServedOrder;

use orders_vocabulary::names::ORDERS_COLLECTION as COLLECTION;

/// How a create ended: a new order, or the replay of an earlier one.
pub type Created = Inserted<ServedOrder>;

pub struct SidecarClient {
    base_url: String,
    token: String,
    request_id: Option<String>,
    /// The caller's `Authorization` header, checked by the sidecar with every call.
    credential: Option<String>,
    /// What the component's operation needs of that credential.
    access: Access,
    /// The client's address, for throttling failed authentications.
    client: Option<String>,
    /// Whether a call already carried the rate limit's count for this request.
    counted: std::cell::Cell<bool>,
}

impl SidecarClient {
    /// Reads the sidecar's address and token from the Spin variables
    /// `sidecar_url` and `sidecar_token`, and carries the caller's request id
    /// (so the sidecar logs under the same id) and credential, which the
    /// sidecar checks for `access` before each operation.
    pub fn from_request(request: &Request, access: Access) -> Result<Self, ApiError> {
        let header = |name: &str| request.header(name).and_then(|value| value.as_str()).map(str::to_owned);
        let client = client_address(header("spin-client-addr").as_deref(), header("x-forwarded-for").as_deref());
        Self::new(header("x-request-id"), header("authorization"), client, access)
    }

    /// The same, for components that read the request themselves (streaming ones).
    pub fn new(request_id: Option<String>, credential: Option<String>, client: Option<String>, access: Access) -> Result<Self, ApiError> {
        let variable = |name: &str| {
            spin_sdk::variables::get(name).map_err(|e| {
                ApiError::unavailable(format!("The component is missing its '{name}' setting: {e}"))
            })
        };
        Ok(Self {
            base_url: variable("sidecar_url")?.trim_end_matches('/').to_owned(),
            token: variable("sidecar_token")?,
            request_id,
            credential,
            access,
            client,
            counted: std::cell::Cell::new(false),
        })
    }

    /// Whether the sidecar can reach its store right now.
    pub async fn store_ready(&self) -> Result<(), ApiError> {
        let response = self.call(Method::Get, "/v1/ready", None).await?;
        Self::decode::<Ready>(&response).map(drop)
    }

    pub async fn get_order(&self, order_id: &OrderId) -> Result<Option<ServedOrder>, ApiError> {
        let path = format!("/v1/docs/{COLLECTION}/{}", order_id.as_str());
        let response = self.call(Method::Get, &path, None).await?;
        if *response.status() == 404 {
            return Ok(None);
        }
        let order = ServedOrder::from_stored(Self::decode::<OneDoc<Box<RawValue>>>(&response)?.doc)?;
        self.report_nonconforming(std::slice::from_ref(&order)).await;
        Ok(Some(order))
    }

    /// Orders in `_id` order after `after`, as they are served (not yet
    /// reported: the caller reports the ones it serves).
    pub async fn list_orders(&self, after: Option<&OrderId>, limit: u32) -> Result<Vec<ServedOrder>, ApiError> {
        let query = ListQuery { after: after.map(|after| after.as_str().to_owned()), limit: Some(limit) };
        let path = format!("/v1/docs/{COLLECTION}?{}", query.to_query());
        let response = self.call(Method::Get, &path, None).await?;
        Self::decode::<ManyDocs<Box<RawValue>>>(&response)?.docs.into_iter().map(ServedOrder::from_stored).collect()
    }

    /// Inserts the order, or with a key returns the order that key first
    /// created. The sidecar decides atomically, so concurrent retries on
    /// different instances still create one order.
    pub async fn create_order(
        &self,
        order: &NewOrder,
        key: Option<&IdempotencyKey>,
        now: &str,
    ) -> Result<Created, ApiError> {
        let mut fields = order.fields().clone();
        fields.insert("created_at".into(), Value::from(now));
        fields.insert("updated_at".into(), Value::from(now));
        let idempotency = key.map(|key| IdempotencyRequest { key: key.as_str().to_owned(), fingerprint: order.fingerprint() });
        let body = json_body(&InsertRequest { fields, idempotency })?;
        let response = self.call(Method::Post, &format!("/v1/docs/{COLLECTION}"), body).await?;
        if *response.status() == 409 {
            return Err(ApiError::conflict(
                "This Idempotency-Key was already used with a different request body",
            ));
        }
        let Inserted { doc, replayed } = Self::decode::<Inserted<Box<RawValue>>>(&response)?;
        Ok(Created { doc: ServedOrder::from_stored(doc)?, replayed })
    }

    /// Applies `set` (plus `updated_at`) and bumps the version, if the order
    /// exists and, when `if_version` is given, is still at that version.
    pub async fn update_order(
        &self,
        order_id: &OrderId,
        set: &Map<String, Value>,
        if_version: Option<i64>,
        now: &str,
    ) -> Result<ServedOrder, ApiError> {
        let mut set = set.clone();
        set.insert("updated_at".into(), Value::from(now));
        let body = json_body(&UpdateRequest { set, if_version })?;
        let path = format!("/v1/docs/{COLLECTION}/{}", order_id.as_str());
        let response = self.call(Method::Patch, &path, body).await?;
        Self::expect_found(&response)?;
        let order = ServedOrder::from_stored(Self::decode::<OneDoc<Box<RawValue>>>(&response)?.doc)?;
        self.report_nonconforming(std::slice::from_ref(&order)).await;
        Ok(order)
    }

    pub async fn delete_order(&self, order_id: &OrderId, if_version: Option<i64>) -> Result<(), ApiError> {
        let mut path = format!("/v1/docs/{COLLECTION}/{}", order_id.as_str());
        if let Some(version) = if_version {
            path.push_str(&format!("?if_version={version}"));
        }
        let response = self.call(Method::Delete, &path, None).await?;
        Self::expect_found(&response)?;
        Self::decode::<Deleted>(&response).map(drop)
    }

    /// Tells the sidecar which of the orders about to be served do not meet
    /// the contract (documents the old service wrote), so that operators see
    /// them in its log and metrics. Only ids and field names travel, never
    /// values, and a failed report never fails the request.
    pub async fn report_nonconforming(&self, orders: &[ServedOrder]) {
        let documents: Vec<NonconformingDocument> = orders.iter().filter_map(ServedOrder::nonconforming).cloned().collect();
        if documents.is_empty() {
            return;
        }
        let path = format!("/v1/reports/{COLLECTION}/nonconforming");
        if let Ok(body) = json_body(&NonconformingReport { documents }) {
            let _ = self.call(Method::Post, &path, body).await;
        }
    }

    /// 404 and 412 from a write are answers for the client, not faults.
    fn expect_found(response: &Response) -> Result<(), ApiError> {
        match *response.status() {
            404 => Err(ApiError::order_not_found()),
            412 => Err(ApiError::precondition_failed()),
            _ => Ok(()),
        }
    }

    /// `body` is JSON text ([`json_body`]).
    pub(crate) fn request(&self, method: Method, path: &str, body: Option<String>) -> Request {
        let mut builder = Request::builder();
        builder
            .method(method)
            .uri(format!("{}{path}", self.base_url))
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(request_id) = &self.request_id {
            builder.header("x-request-id", request_id.as_str());
        }
        builder.header(orders_access::SCOPE_HEADER, self.access.header_value());
        if let Some(credential) = &self.credential {
            builder.header(orders_access::CREDENTIAL_HEADER, credential.as_str());
        }
        if let Some(client) = &self.client {
            builder.header(orders_access::CLIENT_HEADER, client.as_str());
        }
        if !self.counted.replace(true) {
            builder.header(orders_access::COUNT_HEADER, "1");
        }
        if let Some(body) = body {
            builder.header("content-type", "application/json").body(body);
        }
        builder.build()
    }

    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<String>) -> Result<Response, ApiError> {
        let response = send::<_, Response>(self.request(method, path, body)).await.map_err(unreachable)?;
        match refusal(&response) {
            Some(refused) => Err(refused),
            None => Ok(response),
        }
    }

    /// Decodes a 2xx body; any other status is the sidecar's fault (or its
    /// store's), reported as 503 so the client retries rather than gives up.
    pub(crate) fn decode<'a, T: Deserialize<'a>>(response: &'a Response) -> Result<T, ApiError> {
        let status = *response.status();
        if (200..300).contains(&status) {
            return serde_json::from_slice(response.body()).map_err(|e| {
                ApiError::unavailable(format!("The store gave an unreadable answer: {e}"))
            });
        }
        // Only the code: the sidecar's message may quote its store's own
        // error (hosts, replica-set names), which is for its log, not clients.
        let detail = serde_json::from_slice::<ErrorBody>(response.body())
            .map(|e| e.error.to_string())
            .unwrap_or_else(|_| format!("status {status}"));
        Err(ApiError::unavailable(format!("The store is unavailable ({detail}); retry shortly")))
    }
}

/// A request body as JSON text.
pub(crate) fn json_body(body: &impl Serialize) -> Result<Option<String>, ApiError> {
    serde_json::to_string(body)
        .map(Some)
        .map_err(|e| ApiError::unavailable(format!("A sidecar request could not be written: {e}")))
}

pub(crate) fn unreachable(error: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("The store cannot be reached: {error}"))
}
