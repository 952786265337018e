//! The sidecar's internal HTTP API, version 1 (`docs/sidecar-api.md`).
//! Generic document operations on allow-listed collections; the business
//! rules (what an order is) stay in the components. The bodies and error
//! codes are `orders_vocabulary::api`'s, which the components' client uses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::blobs::BlobStore;
use crate::data::DataService;
use crate::events::EventLog;
use crate::queue::JobQueue;
use crate::metrics::{Operation, SidecarMetrics};
use orders_vocabulary::api::{Deleted, ErrorBody, ErrorCode, InsertRequest, Inserted, ListQuery, OneDoc, Ready, UpdateRequest};
use orders_vocabulary::page::{DEFAULT_PAGE_SIZE, MAX_SIDECAR_PAGE};

use crate::store::{Idempotency, InsertOutcome, StoreError, WriteOutcome, is_object_id};

#[derive(Clone)]
pub struct ApiState {
    pub data: Arc<DataService>,
    pub queue: Arc<dyn JobQueue>,
    pub blobs: Arc<BlobStore>,
    pub metrics: SidecarMetrics,
    pub token: Arc<str>,
    pub collections: Arc<[String]>,
    pub streams: Arc<[String]>,
    pub events: Arc<dyn EventLog>,
    /// How long an event log lives past its last append.
    pub events_ttl: std::time::Duration,
    /// How many jobs a stream may hold, overall and per limit key.
    pub stream_limits: crate::queue::StreamLimits,
    /// The check of callers' credentials and the audit trail.
    pub auth: Arc<crate::auth::Auth>,
}

impl axum::extract::FromRef<ApiState> for Arc<crate::auth::Auth> {
    fn from_ref(state: &ApiState) -> Self {
        state.auth.clone()
    }
}

/// An API failure as `{"error": code, "message": …}`, with the status the code comes with.
pub struct ApiFailure {
    code: ErrorCode,
    message: String,
    retry_after_secs: Option<u32>,
    /// What went wrong inside, for the log only: a backend's own error
    /// text names hosts, replica sets and paths that callers must not see.
    detail: Option<String>,
}

/// The inside story of a failed response, carried to [`measured`] (which
/// logs it under the request id) in the response's extensions.
#[derive(Clone)]
struct FailureDetail(String);

/// The id a create gave its document, carried on the response for the
/// audit trail (so it need not read the body back).
#[derive(Clone)]
pub struct CreatedId(pub String);

impl ApiFailure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_secs: None, detail: None }
    }

    /// A backend that cannot answer now: 503 + `Retry-After` with a message
    /// that says only which part is down; `detail` goes to the log.
    pub fn unavailable(code: ErrorCode, what: &str, detail: impl Into<String>) -> Self {
        let mut failure = Self::new(code, format!("the {what} is unavailable; retry shortly"));
        failure.detail = Some(detail.into());
        failure
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The internal detail, for callers that log it themselves.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

impl From<StoreError> for ApiFailure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => Self::unavailable(ErrorCode::StoreUnavailable, "store", detail),
            StoreError::Invalid(message) => Self::new(ErrorCode::InvalidRequest, message),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = Json(ErrorBody { error: self.code, message: self.message });
        let retry_after = self.retry_after_secs.or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        let mut response = match retry_after {
            Some(secs) => (status, [(header::RETRY_AFTER, secs.to_string())], body).into_response(),
            None => (status, body).into_response(),
        };
        if let Some(detail) = self.detail {
            response.extensions_mut().insert(FailureDetail(detail));
        }
        response
    }
}

type ApiResult = Result<Response, ApiFailure>;

pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/ready", get(ready))
        .route("/v1/docs/{collection}", get(list).post(insert))
        .route("/v1/docs/{collection}/{id}", get(get_one).patch(update).delete(delete))
        .merge(crate::api_jobs::routes())
        .merge(crate::api_events::routes())
        .merge(crate::api_reports::routes())
        .route("/v1/audit", get(crate::auth::http::read_audit))
        // Runs second: the caller's credential, once the component's token checked out.
        .layer(middleware::from_fn_with_state(state.auth.clone(), crate::auth::http::check_access))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiFailure::new(ErrorCode::NotFound, "no such sidecar endpoint") })
        .with_state(state)
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => next.run(request).await,
        _ => ApiFailure::new(ErrorCode::Unauthorized, "a valid bearer token is required").into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Times and counts one operation, logging it under the caller's request id.
pub async fn measured(state: &ApiState, operation: Operation, headers: &HeaderMap, work: impl Future<Output = ApiResult>) -> Response {
    let started = Instant::now();
    let response = work.await.unwrap_or_else(IntoResponse::into_response);
    let status = response.status().as_u16();
    state.metrics.operation(operation, response.status().is_server_error(), started.elapsed());
    let operation = operation.label();
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info!(target: "sidecar", request_id, operation, status, micros = started.elapsed().as_micros() as u64, "operation");
    if status >= 500 {
        let detail = response.extensions().get::<FailureDetail>().map_or("", |d| d.0.as_str());
        tracing::warn!(target: "sidecar", request_id, operation, status, detail, "operation failed");
    }
    response
}

/// Only allow-listed collections and streams exist for components.
pub fn check_allowed(allowed: &[String], name: &str, what: &'static str, code: ErrorCode) -> Result<(), ApiFailure> {
    if allowed.iter().any(|entry| entry == name) {
        Ok(())
    } else {
        Err(ApiFailure::new(code, format!("{what} {name:?} is not allowed")))
    }
}

fn check_collection(state: &ApiState, collection: &str) -> Result<(), ApiFailure> {
    check_allowed(&state.collections, collection, "collection", ErrorCode::UnknownCollection)
}

fn check_id(id: &str) -> Result<(), ApiFailure> {
    if is_object_id(id) {
        Ok(())
    } else {
        Err(ApiFailure::new(ErrorCode::InvalidId, "ids are 24 lowercase hexadecimal characters"))
    }
}

fn json_text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn not_found() -> ApiFailure {
    ApiFailure::new(ErrorCode::NotFound, "no document with this id")
}

fn version_mismatch() -> ApiFailure {
    ApiFailure::new(ErrorCode::VersionMismatch, "the document is at another version")
}

async fn ready(State(state): State<ApiState>) -> Response {
    match state.data.ping().await {
        Ok(()) => {
            let ready = Ready { status: "ready".into(), store: state.data.store().backend().into(), cache: state.data.cache_backend().into() };
            Json(ready).into_response()
        }
        Err(error) => {
            let failure = ApiFailure::from(error);
            tracing::warn!(target: "sidecar", detail = failure.detail().unwrap_or(""), "not ready");
            failure.into_response()
        }
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut text = state.metrics.registry.render();
    text.push_str(&crate::process_metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn list(State(state): State<ApiState>, Path(collection): Path<String>, Query(query): Query<ListQuery>, headers: HeaderMap) -> Response {
    measured(&state, Operation::List, &headers, async {
        check_collection(&state, &collection)?;
        if let Some(after) = &query.after {
            check_id(after)?;
        }
        let limit = query.limit.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, MAX_SIDECAR_PAGE);
        let body = state.data.list_body(&collection, query.after.as_deref(), limit).await?;
        Ok(json_text(StatusCode::OK, body))
    })
    .await
}

async fn get_one(State(state): State<ApiState>, Path((collection, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    measured(&state, Operation::Get, &headers, async {
        check_collection(&state, &collection)?;
        check_id(&id)?;
        let body = state.data.get_body(&collection, &id).await?.ok_or_else(not_found)?;
        Ok(json_text(StatusCode::OK, body))
    })
    .await
}

async fn insert(State(state): State<ApiState>, Path(collection): Path<String>, headers: HeaderMap, body: Json<InsertRequest>) -> Response {
    measured(&state, Operation::Insert, &headers, async {
        check_collection(&state, &collection)?;
        let Json(body) = body;
        let idempotency = body.idempotency.map(|i| Idempotency { key: i.key, fingerprint: i.fingerprint });
        match state.data.insert(&collection, body.fields, idempotency).await? {
            InsertOutcome::Created(doc) => {
                let created = CreatedId(crate::data::doc_id(&doc).to_owned());
                let mut response = (StatusCode::CREATED, Json(Inserted { doc, replayed: false })).into_response();
                response.extensions_mut().insert(created);
                Ok(response)
            }
            InsertOutcome::Replayed(doc) => Ok((StatusCode::OK, Json(Inserted { doc, replayed: true })).into_response()),
            InsertOutcome::KeyConflict => {
                Err(ApiFailure::new(ErrorCode::IdempotencyConflict, "this idempotency key was used with another request"))
            }
        }
    })
    .await
}

async fn update(
    State(state): State<ApiState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Json<UpdateRequest>,
) -> Response {
    measured(&state, Operation::Update, &headers, async {
        check_collection(&state, &collection)?;
        check_id(&id)?;
        let Json(body) = body;
        match state.data.update(&collection, &id, body.set, body.if_version).await? {
            WriteOutcome::Done(doc) => Ok(Json(OneDoc { doc }).into_response()),
            WriteOutcome::NotFound => Err(not_found()),
            WriteOutcome::VersionMismatch => Err(version_mismatch()),
        }
    })
    .await
}

async fn delete(
    State(state): State<ApiState>,
    Path((collection, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    measured(&state, Operation::Delete, &headers, async {
        check_collection(&state, &collection)?;
        check_id(&id)?;
        let if_version = match query.get("if_version") {
            Some(raw) => Some(raw.parse::<i64>().map_err(|_| ApiFailure::new(ErrorCode::InvalidRequest, "if_version must be an integer"))?),
            None => None,
        };
        match state.data.delete(&collection, &id, if_version).await? {
            WriteOutcome::Done(()) => Ok(Json(Deleted { deleted: true }).into_response()),
            WriteOutcome::NotFound => Err(not_found()),
            WriteOutcome::VersionMismatch => Err(version_mismatch()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;

    #[tokio::test]
    async fn a_503_never_carries_the_backends_own_words() {
        let detail = "Server selection timeout: No available servers. Topology: { Type: ReplicaSetNoPrimary, Set Name: rs-prod-7, \
                      Servers: [ { Address: mongo-2.internal.example:27017, Type: Unknown } ] }";
        let response = ApiFailure::from(StoreError::Unavailable(detail.to_owned())).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.extensions().get::<FailureDetail>().map(|d| d.0.as_str()), Some(detail), "kept for the log");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, json!({ "error": "store_unavailable", "message": "the store is unavailable; retry shortly" }));
        for secret in ["rs-prod-7", "mongo-2.internal", "27017", "Topology"] {
            assert!(!body.to_string().contains(secret), "{body}");
        }
    }
}
