//! The sidecar API's event logs (`/v1/logs`) and one-time marks
//! (`/v1/marks`): how components record and follow a bundle's progress and
//! spend its download link exactly once: in one step (`/v1/marks/{key}`),
//! or reserved before the first byte and spent once delivered
//! (`/v1/marks/{key}/reserve|spend|release`).

use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiFailure, ApiState, check_allowed, measured};
use crate::api_jobs::check_key;
use crate::events::EventsError;

/// The longest a read may wait for a first new event.
const MAX_WAIT: Duration = Duration::from_secs(30);
const WAIT_STEP: Duration = Duration::from_millis(100);
const MAX_READ: usize = 1000;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/logs/{log}/{key}", get(read).post(append))
        .route("/v1/marks/{key}", post(mark))
        .route("/v1/marks/{key}/reserve", post(reserve))
        .route("/v1/marks/{key}/spend", post(spend))
        .route("/v1/marks/{key}/release", post(release))
}

/// Marks live at most this long (a link's life is far shorter).
const MAX_MARK_SECS: u64 = 30 * 86_400;

impl From<EventsError> for ApiFailure {
    fn from(error: EventsError) -> Self {
        match error {
            EventsError::BadId(bad) => {
                ApiFailure::new(StatusCode::BAD_REQUEST, "invalid_after", bad.to_string())
            }
            EventsError::Unavailable(error) => error.into(),
        }
    }
}

fn check_log(state: &ApiState, log: &str, key: &str) -> Result<(), ApiFailure> {
    check_allowed(&state.streams, log, "log", "unknown_log")?;
    check_key(key)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    event: String,
    #[serde(default)]
    data: Value,
}

async fn append(
    State(state): State<ApiState>,
    Path((log, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Json<AppendBody>,
) -> Response {
    measured(&state, "log_append", &headers, async {
        check_log(&state, &log, &key)?;
        let AppendBody { event, data } = body.0;
        if event.is_empty()
            || event.len() > 64
            || !event
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_event",
                "event names are 1-64 of A-Z a-z 0-9 _",
            ));
        }
        let id = state
            .events
            .append(&log, &key, &event, &data, state.events_ttl)
            .await?;
        Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    after: Option<String>,
    limit: Option<usize>,
    wait_ms: Option<u64>,
}

/// Events after `after`; with `wait_ms`, waits up to that long for the
/// first one (a long poll), so followers need not spin.
async fn read(
    State(state): State<ApiState>,
    Path((log, key)): Path<(String, String)>,
    headers: HeaderMap,
    query: Query<ReadQuery>,
) -> Response {
    measured(&state, "log_read", &headers, async {
        check_log(&state, &log, &key)?;
        let ReadQuery {
            after,
            limit,
            wait_ms,
        } = query.0;
        let limit = limit.unwrap_or(MAX_READ).clamp(1, MAX_READ);
        let deadline = Instant::now() + Duration::from_millis(wait_ms.unwrap_or(0)).min(MAX_WAIT);
        loop {
            let events = state
                .events
                .read(&log, &key, after.as_deref(), limit)
                .await?;
            if !events.is_empty() || Instant::now() + WAIT_STEP > deadline {
                return Ok(Json(json!({ "events": events })).into_response());
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkBody {
    ttl_secs: u64,
}

async fn mark(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<MarkBody>,
) -> Response {
    measured(&state, "mark_once", &headers, async {
        check_key(&key)?;
        let ttl = Duration::from_secs(body.0.ttl_secs.clamp(1, MAX_MARK_SECS));
        if state.events.mark_once(&key, ttl).await? {
            Ok((StatusCode::CREATED, Json(json!({ "marked": true }))).into_response())
        } else {
            Err(ApiFailure::new(
                StatusCode::CONFLICT,
                "already_marked",
                "this mark was taken before",
            ))
        }
    })
    .await
}

/// Holders are opaque request ids: short, and plain enough for any backend.
fn check_holder(holder: &str) -> Result<(), ApiFailure> {
    if !holder.is_empty()
        && holder.len() <= 128
        && holder
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_holder",
            "holders are 1-128 of A-Z a-z 0-9 . _ -",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    holder: String,
    lease_secs: u64,
}

async fn reserve(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<ReserveBody>,
) -> Response {
    measured(&state, "mark_reserve", &headers, async {
        check_key(&key)?;
        let ReserveBody { holder, lease_secs } = body.0;
        check_holder(&holder)?;
        let reservation = state
            .events
            .reserve_mark(
                &key,
                &holder,
                Duration::from_secs(lease_secs.clamp(1, 3600)),
            )
            .await?;
        Ok(Json(json!({ "reservation": reservation })).into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendBody {
    holder: String,
    ttl_secs: u64,
}

async fn spend(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<SpendBody>,
) -> Response {
    measured(&state, "mark_spend", &headers, async {
        check_key(&key)?;
        let SpendBody { holder, ttl_secs } = body.0;
        check_holder(&holder)?;
        if state
            .events
            .spend_mark(
                &key,
                &holder,
                Duration::from_secs(ttl_secs.clamp(1, MAX_MARK_SECS)),
            )
            .await?
        {
            Ok(Json(json!({ "spent": true })).into_response())
        } else {
            Err(ApiFailure::new(
                StatusCode::CONFLICT,
                "not_reserved",
                "this holder does not hold the mark",
            ))
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    holder: String,
}

async fn release(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<ReleaseBody>,
) -> Response {
    measured(&state, "mark_release", &headers, async {
        check_key(&key)?;
        check_holder(&body.0.holder)?;
        let released = state.events.release_mark(&key, &body.0.holder).await?;
        Ok(Json(json!({ "released": released })).into_response())
    })
    .await
}
