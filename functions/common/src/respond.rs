//! Successful answers: JSON bodies with the headers the contract promises.

use serde::Serialize;
use spin_sdk::http::{Request, Response};

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

/// The header naming a request in every log line it causes.
pub const REQUEST_ID: &str = "x-request-id";

/// The caller's `X-Request-Id`, to echo on the answer.
pub fn request_id(request: &Request) -> Option<String> {
    request.header(REQUEST_ID).and_then(|value| value.as_str()).map(str::to_owned)
}

/// Turns a handler's outcome into the response, errors included, echoing
/// the caller's `X-Request-Id` as the contract promises. No Spin runtime adds
/// that header to a component's answer, and a function answers the same
/// whether the orders router chained to it or the runner routed to it.
pub fn finish(request_id: Option<String>, outcome: Result<Response, ApiError>) -> Response {
    let mut response = outcome.unwrap_or_else(ApiError::into_response);
    if let Some(id) = request_id {
        response.set_header(REQUEST_ID, id);
    }
    response
}
