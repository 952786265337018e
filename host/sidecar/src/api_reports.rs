//! The sidecar API's reports (`/v1/reports`): components say which stored
//! documents they served that do not meet their contract, so that operators
//! see them in one log and one metric on every deployment, Spin's included.
//! The sidecar keeps no rules of its own about what a document should be.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use orders_vocabulary::api::{ErrorCode, NonconformingReport, Recorded};

use crate::api::{ApiFailure, ApiState, check_allowed, measured};
use crate::metrics::Operation;
use crate::store::is_object_id;

const MAX_DOCUMENTS: usize = NonconformingReport::MAX_DOCUMENTS;
const MAX_FIELDS: usize = NonconformingReport::MAX_FIELDS;

pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/v1/reports/{collection}/nonconforming",
        post(nonconforming),
    )
}

async fn nonconforming(
    State(state): State<ApiState>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    Json(body): Json<NonconformingReport>,
) -> axum::response::Response {
    measured(&state, Operation::Report, &headers, async {
        check_allowed(&state.collections, &collection, "collection", ErrorCode::UnknownCollection)?;
        if body.documents.len() > MAX_DOCUMENTS {
            return Err(ApiFailure::new(ErrorCode::TooManyDocuments, format!("at most {MAX_DOCUMENTS} documents per report")));
        }
        for document in &body.documents {
            if !is_object_id(&document.id) || document.fields.len() > MAX_FIELDS {
                return Err(ApiFailure::new(ErrorCode::InvalidReport, "ids are ObjectIds; at most 64 field names each"));
            }
            let fields: Vec<String> = document.fields.iter().map(|field| field.chars().take(64).collect()).collect();
            tracing::warn!(target: "sidecar", collection, id = document.id, fields = ?fields, "served a document that does not meet its contract; see orders migrate");
        }
        state.metrics.nonconforming(&collection, body.documents.len() as u64);
        Ok((StatusCode::OK, Json(Recorded { recorded: body.documents.len() })).into_response())
    })
    .await
}
