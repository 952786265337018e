//! The one error shape of the API: `{"message", "errors"?}` with a status.

use serde::Serialize;
use spin_sdk::http::Response;

pub use orders_contract::FieldError;

/// Every non-2xx answer of the API. Built only through the constructors
/// below, so each status carries the headers the contract requires with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Vec<FieldError>,
    headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), errors: Vec::new(), headers: Vec::new() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    pub fn order_not_found() -> Self {
        Self::not_found("Order not found")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, message)
    }

    pub fn method_not_allowed(allow: &[&str]) -> Self {
        let allow = allow.join(", ");
        let mut error = Self::new(405, format!("Method not allowed here; allowed: {allow}"));
        error.headers.push(("allow", allow));
        error
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    pub fn precondition_failed() -> Self {
        Self::new(412, "The order has changed since the version given in If-Match; fetch it again")
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(413, format!("Request body is larger than {} KiB", limit_bytes / 1024))
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(415, "Content-Type must be application/json")
    }

    pub fn unprocessable(errors: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let mut error = Self::new(422, format!("Invalid fields: {}", fields.join(", ")));
        error.errors = errors;
        error
    }

    /// The store (or the sidecar in front of it) cannot answer now; nothing
    /// was applied, so the client may retry after the given delay.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(503, message);
        error.headers.push(("retry-after", "1".to_owned()));
        error
    }

    /// The caller holds its share of a bounded resource (e.g. bundles
    /// queued at once); it may try again after `retry_after_secs`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u32) -> Self {
        let mut error = Self::new(429, message);
        error.headers.push(("retry-after", retry_after_secs.to_string()));
        error
    }

    /// Like [`ApiError::unavailable`], with a longer wait (the service is
    /// at capacity, not briefly unreachable).
    pub fn at_capacity(message: impl Into<String>, retry_after_secs: u32) -> Self {
        let mut error = Self::new(503, message);
        error.headers.push(("retry-after", retry_after_secs.to_string()));
        error
    }

    /// The sidecar refused the caller (401, 403, 429): its words and headers, passed on.
    pub fn refused(status: u16, message: String, headers: Vec<(&'static str, String)>) -> Self {
        Self { status, message, errors: Vec::new(), headers }
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody { message: &self.message, errors: &self.errors })
            .unwrap_or_else(|_| br#"{"message":"error"}"#.to_vec());
        let mut builder = Response::builder();
        builder.status(self.status).header("content-type", "application/json");
        for (name, value) in self.headers {
            builder.header(name, value);
        }
        builder.body(body).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprocessable_names_every_field_in_the_message() {
        let error = ApiError::unprocessable(vec![
            FieldError::new("quantity", "must be an integer"),
            FieldError::new("product", "is required"),
        ]);
        assert_eq!(error.status, 422);
        assert_eq!(error.message, "Invalid fields: quantity, product");
    }

    #[test]
    fn method_not_allowed_carries_allow_header() {
        let error = ApiError::method_not_allowed(&["GET", "POST"]);
        assert_eq!(error.headers, vec![("allow", "GET, POST".to_owned())]);
    }
}
