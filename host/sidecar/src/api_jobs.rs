//! The sidecar API's job streams and blobs (`/v1/streams`, `/v1/blobs`),
//! used by background work such as the bundle pipeline.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders_vocabulary::api::{AckRequest, Acked, AppendJobRequest, Appended, BlobPut, ClaimRequest, Claimed, Deleted, Depth, ErrorCode};

use crate::api::{ApiFailure, ApiState, check_allowed, measured};
use crate::blobs::valid_key;
use crate::metrics::Operation;
use crate::queue::{AppendLimits, AppendOutcome, QueueError};

/// How long a client refused for a full queue is asked to wait.
const FULL_RETRY_AFTER_SECS: u32 = 10;

/// The largest blob the API accepts.
pub const MAX_BLOB_BYTES: usize = 256 << 20;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/streams/{stream}", get(depth).post(append))
        .route("/v1/streams/{stream}/claim", post(claim))
        .route("/v1/streams/{stream}/ack", post(ack))
        .route(
            "/v1/blobs/{key}",
            get(get_blob)
                .put(put_blob)
                .delete(delete_blob)
                .layer(DefaultBodyLimit::max(MAX_BLOB_BYTES)),
        )
}

impl From<QueueError> for ApiFailure {
    fn from(error: QueueError) -> Self {
        ApiFailure::unavailable(ErrorCode::QueueUnavailable, "queue", error.0)
    }
}

fn check_stream(state: &ApiState, stream: &str) -> Result<(), ApiFailure> {
    check_allowed(&state.streams, stream, "stream", ErrorCode::UnknownStream)
}

pub(crate) fn check_key(key: &str) -> Result<(), ApiFailure> {
    if valid_key(key) {
        Ok(())
    } else {
        Err(ApiFailure::new(
            ErrorCode::InvalidKey,
            "blob keys are 1-128 of A-Z a-z 0-9 . _ -, not starting with a dot",
        ))
    }
}

fn io_failure(error: std::io::Error) -> ApiFailure {
    ApiFailure::unavailable(ErrorCode::BlobStoreUnavailable, "blob store", error.to_string())
}

/// Appends within the stream's limits (`limit_key`, whom the job counts
/// against, holds at most `max_queued_per_key` unfinished jobs): 503 + `Retry-After` when the stream
/// is full (everyone waits), 429 when the caller's key holds its share.
async fn append(
    State(state): State<ApiState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Json<AppendJobRequest>,
) -> Response {
    measured(&state, Operation::StreamAppend, &headers, async {
        check_stream(&state, &stream)?;
        let AppendJobRequest { payload, limit_key } = body.0;
        if limit_key.as_deref().is_some_and(|key| key.is_empty() || key.len() > AppendJobRequest::MAX_LIMIT_KEY) {
            return Err(ApiFailure::new(
                ErrorCode::InvalidRequest,
                format!("limit_key must be 1-{} characters", AppendJobRequest::MAX_LIMIT_KEY),
            ));
        }
        let limits = &state.stream_limits;
        let bounds = AppendLimits { max_queued: limits.max_queued, per_key: limit_key.as_deref().map(|key| (key, limits.max_queued_per_key)) };
        match state.queue.append_within(&stream, &payload, &bounds).await? {
            AppendOutcome::Added(id) => Ok((StatusCode::CREATED, Json(Appended { id })).into_response()),
            AppendOutcome::StreamFull => Err(ApiFailure::new(
                ErrorCode::StreamFull,
                format!("{} jobs are queued or running, the most allowed; retry later", limits.max_queued),
            )
            .retry_after(FULL_RETRY_AFTER_SECS)),
            AppendOutcome::KeyFull => Err(ApiFailure::new(
                ErrorCode::TooManyForKey,
                format!("{} of your jobs are queued or running, the most allowed at once; retry when one is done", limits.max_queued_per_key),
            )
            .retry_after(FULL_RETRY_AFTER_SECS)),
        }
    })
    .await
}

async fn claim(
    State(state): State<ApiState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Json<ClaimRequest>,
) -> Response {
    measured(&state, Operation::StreamClaim, &headers, async {
        check_stream(&state, &stream)?;
        let ClaimRequest {
            consumer,
            count,
            min_idle_ms,
        } = body.0;
        if consumer.is_empty() || !(1..=ClaimRequest::MAX_COUNT).contains(&count) {
            return Err(ApiFailure::new(
                ErrorCode::InvalidRequest,
                format!("consumer must be named and count within 1..={}", ClaimRequest::MAX_COUNT),
            ));
        }
        let jobs = state
            .queue
            .claim(&stream, &consumer, count, min_idle_ms)
            .await?;
        Ok(Json(Claimed { jobs }).into_response())
    })
    .await
}

async fn ack(
    State(state): State<ApiState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Json<AckRequest>,
) -> Response {
    measured(&state, Operation::StreamAck, &headers, async {
        check_stream(&state, &stream)?;
        let acked = state.queue.ack(&stream, &body.0.ids).await?;
        Ok(Json(Acked { acked }).into_response())
    })
    .await
}

async fn depth(
    State(state): State<ApiState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Response {
    measured(&state, Operation::StreamDepth, &headers, async {
        check_stream(&state, &stream)?;
        let depth = state.queue.depth(&stream).await?;
        Ok(Json(Depth { depth }).into_response())
    })
    .await
}

async fn put_blob(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    measured(&state, Operation::BlobPut, &headers, async {
        check_key(&key)?;
        state.blobs.put(&key, &body).await.map_err(io_failure)?;
        Ok((
            StatusCode::CREATED,
            Json(BlobPut { key, bytes: body.len() }),
        )
            .into_response())
    })
    .await
}

async fn get_blob(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    measured(&state, Operation::BlobGet, &headers, async {
        check_key(&key)?;
        // Streamed from the file: bundle zips run to 100 MiB.
        match state.blobs.reader(&key).await.map_err(io_failure)? {
            Some((file, length)) => Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::CONTENT_LENGTH, length.to_string()),
                ],
                axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
            )
                .into_response()),
            None => Err(ApiFailure::new(ErrorCode::NotFound, "no blob with this key")),
        }
    })
    .await
}

async fn delete_blob(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    measured(&state, Operation::BlobDelete, &headers, async {
        check_key(&key)?;
        let deleted = state.blobs.delete(&key).await.map_err(io_failure)?;
        Ok(Json(Deleted { deleted }).into_response())
    })
    .await
}
