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
use orders_vocabulary::api::{
    AppendEventRequest, Appended, ErrorCode, Events, MarkRequest, Marked, ReadEventsQuery, ReleaseRequest, Released, ReserveRequest,
    Reserved, SpendRequest, Spent, is_event_name, is_holder,
};

use crate::api::{ApiFailure, ApiState, check_allowed, measured};
use crate::api_jobs::check_key;
use crate::events::EventsError;
use crate::metrics::Operation;

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
                ApiFailure::new(ErrorCode::InvalidAfter, bad.to_string())
            }
            EventsError::Unavailable(error) => error.into(),
        }
    }
}

fn check_log(state: &ApiState, log: &str, key: &str) -> Result<(), ApiFailure> {
    check_allowed(&state.streams, log, "log", ErrorCode::UnknownLog)?;
    check_key(key)
}

async fn append(
    State(state): State<ApiState>,
    Path((log, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Json<AppendEventRequest>,
) -> Response {
    measured(&state, Operation::LogAppend, &headers, async {
        check_log(&state, &log, &key)?;
        let AppendEventRequest { event, data } = body.0;
        if !is_event_name(&event) {
            return Err(ApiFailure::new(
                ErrorCode::InvalidEvent,
                "event names are 1-64 of A-Z a-z 0-9 _",
            ));
        }
        let id = state
            .events
            .append(&log, &key, &event, &data, state.events_ttl)
            .await?;
        Ok((StatusCode::CREATED, Json(Appended { id })).into_response())
    })
    .await
}

/// Events after `after`; with `wait_ms`, waits up to that long for the
/// first one (a long poll), so followers need not spin.
async fn read(
    State(state): State<ApiState>,
    Path((log, key)): Path<(String, String)>,
    headers: HeaderMap,
    query: Query<ReadEventsQuery>,
) -> Response {
    measured(&state, Operation::LogRead, &headers, async {
        check_log(&state, &log, &key)?;
        let ReadEventsQuery {
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
                return Ok(Json(Events { events }).into_response());
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    })
    .await
}

async fn mark(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<MarkRequest>,
) -> Response {
    measured(&state, Operation::MarkOnce, &headers, async {
        check_key(&key)?;
        let ttl = Duration::from_secs(body.0.ttl_secs.clamp(1, MAX_MARK_SECS));
        if state.events.mark_once(&key, ttl).await? {
            Ok((StatusCode::CREATED, Json(Marked { marked: true })).into_response())
        } else {
            Err(ApiFailure::new(
                ErrorCode::AlreadyMarked,
                "this mark was taken before",
            ))
        }
    })
    .await
}

fn check_holder(holder: &str) -> Result<(), ApiFailure> {
    if is_holder(holder) {
        Ok(())
    } else {
        Err(ApiFailure::new(
            ErrorCode::InvalidHolder,
            "holders are 1-128 of A-Z a-z 0-9 . _ -",
        ))
    }
}

async fn reserve(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<ReserveRequest>,
) -> Response {
    measured(&state, Operation::MarkReserve, &headers, async {
        check_key(&key)?;
        let ReserveRequest { holder, lease_secs } = body.0;
        check_holder(&holder)?;
        let reservation = state
            .events
            .reserve_mark(
                &key,
                &holder,
                Duration::from_secs(lease_secs.clamp(1, 3600)),
            )
            .await?;
        Ok(Json(Reserved { reservation }).into_response())
    })
    .await
}

async fn spend(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<SpendRequest>,
) -> Response {
    measured(&state, Operation::MarkSpend, &headers, async {
        check_key(&key)?;
        let SpendRequest { holder, ttl_secs } = body.0;
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
            Ok(Json(Spent { spent: true }).into_response())
        } else {
            Err(ApiFailure::new(
                ErrorCode::NotReserved,
                "this holder does not hold the mark",
            ))
        }
    })
    .await
}

async fn release(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<ReleaseRequest>,
) -> Response {
    measured(&state, Operation::MarkRelease, &headers, async {
        check_key(&key)?;
        check_holder(&body.0.holder)?;
        let released = state.events.release_mark(&key, &body.0.holder).await?;
        Ok(Json(Released { released }).into_response())
    })
    .await
}
