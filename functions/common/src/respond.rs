//! Successful answers: JSON bodies with the headers the contract promises.

use serde::Serialize;
use spin_sdk::http::Response;

use crate::error::ApiError;

/// A JSON response with extra headers; serialisation of our own types
/// cannot fail, but if it ever did the client gets a JSON 503, not a panic.
pub fn json(status: u16, body: &impl Serialize, headers: &[(&str, String)]) -> Response {
    let Ok(bytes) = serde_json::to_vec(body) else {
        return ApiError::unavailable("The answer could not be encoded; retry").into_response();
    };
    let mut builder = Response::builder();
    builder.status(status).header("content-type", "application/json");
    for (name, value) in headers {
        builder.header(*name, value.as_str());
    }
    builder.body(bytes).build()
}

/// Turns a handler's outcome into the response, errors included.
pub fn finish(outcome: Result<Response, ApiError>) -> Response {
    outcome.unwrap_or_else(ApiError::into_response)
}
