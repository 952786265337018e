//! The sidecar's errors: `{"error": code, "message": text}` with the status
//! each code always comes with. The refusals of a caller's credential
//! (`client_*`) are `orders_access::Refusal`'s.

use serde::{Deserialize, Serialize};

/// A failed call's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub message: String,
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:literal;)*) => {
        /// Every code the sidecar answers with (`docs/sidecar-api.md`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $($(#[$doc])* #[serde(rename = $code)] $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it travels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status the code always comes with.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }
        }
    };
}

error_codes! {
    /// The component's bearer token is missing or wrong.
    Unauthorized = "unauthorized", 401;
    /// No such endpoint, document or blob.
    NotFound = "not_found", 404;
    InvalidRequest = "invalid_request", 400;
    /// `X-Orders-Scope` names no scope.
    InvalidScope = "invalid_scope", 400;
    UnknownCollection = "unknown_collection", 404;
    /// Ids are ObjectIds ([`crate::id`]).
    InvalidId = "invalid_id", 400;
    /// `if_version` did not match.
    VersionMismatch = "version_mismatch", 412;
    /// The idempotency key was used with another request.
    IdempotencyConflict = "idempotency_conflict", 409;
    TooManyDocuments = "too_many_documents", 400;
    InvalidReport = "invalid_report", 400;
    UnknownStream = "unknown_stream", 404;
    /// The stream holds the most unfinished jobs allowed (with `Retry-After`).
    StreamFull = "stream_full", 503;
    /// The `limit_key` holds its share of unfinished jobs (with `Retry-After`).
    TooManyForKey = "too_many_for_key", 429;
    UnknownLog = "unknown_log", 404;
    InvalidEvent = "invalid_event", 400;
    /// `after` is not an id the log handed out.
    InvalidAfter = "invalid_after", 400;
    InvalidKey = "invalid_key", 400;
    AlreadyMarked = "already_marked", 409;
    InvalidHolder = "invalid_holder", 400;
    /// The holder no longer holds the mark.
    NotReserved = "not_reserved", 409;
    StoreUnavailable = "store_unavailable", 503;
    QueueUnavailable = "queue_unavailable", 503;
    BlobStoreUnavailable = "blob_store_unavailable", 503;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_travel_as_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert_eq!(
                serde_json::from_value::<ErrorCode>(code.as_str().into()).unwrap(),
                *code
            );
        }
        let body = ErrorBody {
            error: ErrorCode::StreamFull,
            message: "full".into(),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"stream_full","message":"full"}"#
        );
    }

    #[test]
    fn unavailable_codes_are_503_and_others_are_client_errors() {
        for code in ErrorCode::ALL {
            let status = code.status();
            assert_eq!(
                code.as_str().ends_with("_unavailable"),
                status == 503 && *code != ErrorCode::StreamFull,
                "{code}"
            );
            assert!((400..600).contains(&status), "{code}");
        }
    }

    #[test]
    fn the_api_document_names_every_code() {
        let doc = include_str!("../../../../docs/sidecar-api.md");
        for code in ErrorCode::ALL {
            assert!(
                doc.contains(code.as_str()),
                "docs/sidecar-api.md does not mention {code}"
            );
        }
    }
}
