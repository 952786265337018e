//! `GET /audit?since_ms=…&limit=…`: the audit trail (every accepted write and
//! key change), oldest first, for a caller with the `admin` scope.

use orders_common::access::{Access, Scope};
use orders_common::respond::{finish, json, request_id};
use orders_common::vocabulary::page::{DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE as MAX_LIMIT};
use orders_common::{ApiError, SidecarClient};
use serde_json::Value;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), read_audit(request).await)
}

/// The query, checked: `since_ms` (Unix milliseconds, default 0) and `limit` (1–1000, default 100).
fn parse_query(query: &str) -> Result<(i64, u32), ApiError> {
    let (mut since_ms, mut limit) = (0_i64, DEFAULT_AUDIT_PAGE);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "since_ms" => since_ms = value.parse().map_err(|_| ApiError::bad_request("since_ms must be Unix milliseconds"))?,
            "limit" => {
                limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| ApiError::bad_request(format!("limit must be an integer between 1 and {MAX_LIMIT}")))?
            }
            other => return Err(ApiError::bad_request(format!("unknown query parameter {other:?}; use since_ms and limit"))),
        }
    }
    Ok((since_ms, limit))
}

async fn read_audit(request: Request) -> Result<Response, ApiError> {
    if *request.method() != Method::Get {
        return Err(ApiError::method_not_allowed(&["GET"]));
    }
    let (since_ms, limit) = parse_query(request.query())?;
    let sidecar = SidecarClient::from_request(&request, Access::Scope(Scope::Admin))?;
    let entries: Value = sidecar.audit(since_ms, limit).await?;
    Ok(json(200, &entries, &[("cache-control", "no-store".to_owned())]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_checked() {
        assert_eq!(parse_query("").unwrap(), (0, 100));
        assert_eq!(parse_query("since_ms=5&limit=7").unwrap(), (5, 7));
        assert_eq!(parse_query("limit=0").unwrap_err().status, 400);
        assert_eq!(parse_query("since_ms=yesterday").unwrap_err().status, 400);
        assert_eq!(parse_query("user=x").unwrap_err().status, 400);
    }
}
