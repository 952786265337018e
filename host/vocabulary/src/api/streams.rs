//! `/v1/streams/{s}` (job streams) and `/v1/blobs/{key}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/streams/{s}`: a job, counted against `limit_key` (whom it is
/// for: a client address, an API key) when given. The sidecar takes any
/// JSON payload; a client sends its typed job (`P`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendJobRequest<P = Value> {
    pub payload: P,
    pub limit_key: Option<String>,
}

impl AppendJobRequest {
    /// The longest `limit_key` the sidecar takes.
    pub const MAX_LIMIT_KEY: usize = 256;
}

/// The id a stream or a log gave what was appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub id: String,
}

/// `POST /v1/streams/{s}/claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub consumer: String,
    #[serde(default = "ClaimRequest::default_count")]
    pub count: usize,
    /// A job claimed longer ago than this and not acknowledged is handed out again.
    #[serde(default = "ClaimRequest::default_min_idle_ms")]
    pub min_idle_ms: u64,
}

impl ClaimRequest {
    pub const MAX_COUNT: usize = 100;

    fn default_count() -> usize {
        1
    }

    fn default_min_idle_ms() -> u64 {
        60_000
    }
}

/// The claimed jobs (`J`: the sidecar's job, with its id and deliveries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claimed<J> {
    pub jobs: Vec<J>,
}

/// `POST /v1/streams/{s}/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    pub acked: u64,
}

/// `GET /v1/streams/{s}`: unfinished jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    pub depth: u64,
}

/// The answer to `PUT /v1/blobs/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobPut {
    pub key: String,
    pub bytes: usize,
}
