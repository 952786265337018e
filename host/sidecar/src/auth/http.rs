//! The check as an axum layer of the sidecar's `/v1` API, the refusal
//! answers, the audit of accepted writes, and `GET /v1/audit`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orders_access::{
    Access, CLIENT_HEADER, COUNT_HEADER, CREDENTIAL_HEADER, Refusal, SCOPE_HEADER, Scope,
};
use orders_vocabulary::api::{AuditQuery, ErrorCode};
use orders_vocabulary::names::ORDERS_COLLECTION;
use orders_vocabulary::page::{DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE};
use serde_json::{Value, json};

use super::Auth;
use super::clock::{now_ms, rfc3339};
use super::limiter::{FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW_SECS, Window};
use super::verifier::{Principal, Refused};
use crate::api::{ApiFailure, CreatedId};
use crate::store::keys::AuditEntry;

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The sidecar's answer to a refused caller: JSON with the refusal's code, and
/// the headers RFC 6750 (401/403) and the IETF RateLimit draft (429) give it.
pub fn refusal_response(refused: &Refused) -> Response {
    let status = StatusCode::from_u16(refused.refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut body = json!({ "error": refused.refusal.code(), "message": refused.message });
    let mut response_headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    };
    match refused.refusal {
        Refusal::Unauthenticated if refused.presented => set(
            "www-authenticate",
            "Bearer realm=\"orders\", error=\"invalid_token\"".into(),
        ),
        Refusal::Unauthenticated => set("www-authenticate", "Bearer realm=\"orders\"".into()),
        Refusal::Forbidden => {
            let scope = refused.scope.map(Scope::as_str).unwrap_or_default();
            body["scope"] = Value::from(scope);
            set(
                "www-authenticate",
                format!("Bearer realm=\"orders\", error=\"insufficient_scope\", scope=\"{scope}\""),
            );
        }
        Refusal::RateLimited => {}
    }
    if let Some(seconds) = refused.retry_after_secs {
        set("retry-after", seconds.to_string());
    }
    if let Some((policy, state)) = &refused.rate_headers {
        set("ratelimit-policy", policy.clone());
        set("ratelimit", state.clone());
    }
    (status, response_headers, Json(body)).into_response()
}

fn rate_limited(message: &str, window: Window, policy: &str) -> Refused {
    Refused {
        refusal: Refusal::RateLimited,
        message: message.to_owned(),
        scope: None,
        presented: true,
        retry_after_secs: Some(window.reset_secs.max(1)),
        rate_headers: Some(window.headers(policy)),
    }
}

/// What a call to `/v1/docs` changes, for the audit trail.
struct DocWrite {
    operation: String,
    target: Option<String>,
}

fn doc_write(method: &Method, path: &str) -> Option<DocWrite> {
    let mut parts = path.strip_prefix("/v1/docs/")?.split('/');
    let collection = parts.next().filter(|c| !c.is_empty())?;
    let id = parts.next();
    let noun = if collection == ORDERS_COLLECTION {
        "order".to_owned()
    } else {
        collection.to_owned()
    };
    let verb = match (method, id) {
        (&Method::POST, None) => "create",
        (&Method::PATCH, Some(_)) => "update",
        (&Method::DELETE, Some(_)) => "delete",
        _ => return None,
    };
    Some(DocWrite {
        operation: format!("{noun}.{verb}"),
        target: id.map(str::to_owned),
    })
}

/// The layer: lets internal calls (no scope header) and public ones through,
/// checks everything else, then audits what was written.
pub async fn check_access(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let Some(access) = header_text(headers, SCOPE_HEADER) else {
        // A call of the sidecar's own tools, with the sidecar token only.
        return next.run(request).await;
    };
    let Some(access) = Access::parse(access) else {
        return ApiFailure::new(
            ErrorCode::InvalidScope,
            format!("{SCOPE_HEADER} {access:?} is not a scope"),
        )
        .into_response();
    };
    let principal = match access {
        Access::Public => return next.run(request).await,
        Access::Scope(_) if !auth.settings.enabled => Principal {
            actor: "anonymous".into(),
            scopes: vec![Scope::Admin],
            rate_limit: None,
        },
        Access::Scope(needed) => {
            let client = header_text(headers, CLIENT_HEADER).map(|c| format!("failed-auth:{c}"));
            if let Some(bucket) = &client {
                let window = auth
                    .limiter
                    .hit(bucket, FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW_SECS, false)
                    .await;
                if window.used >= FAILED_AUTH_LIMIT {
                    let message = "Too many failed authentications from this address; retry later";
                    return drained(request, refusal_response(&rate_limited(message, window, "failed-auth"))).await;
                }
            }
            let principal = match auth
                .verifier
                .verify(header_text(headers, CREDENTIAL_HEADER), needed)
                .await
            {
                Ok(Ok(principal)) => principal,
                Ok(Err(refused)) => {
                    if let (Some(bucket), true) = (
                        &client,
                        refused.refusal == Refusal::Unauthenticated && refused.presented,
                    ) {
                        auth.limiter
                            .hit(bucket, FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW_SECS, true)
                            .await;
                    }
                    return drained(request, refusal_response(&refused)).await;
                }
                Err(failed) => return drained(request, ApiFailure::from(failed.0).into_response()).await,
            };
            let limit = principal.rate_limit.or(auth.settings.default_rate_limit);
            if let (Some(limit), true) = (limit, headers.contains_key(COUNT_HEADER)) {
                let window = auth.limiter.hit(&principal.actor, limit, 1, true).await;
                if window.exceeded() {
                    let message = format!(
                        "This credential's rate limit of {limit} requests per second is spent; retry after {} s",
                        window.reset_secs
                    );
                    return drained(request, refusal_response(&rate_limited(&message, window, "credential"))).await;
                }
            }
            principal
        }
    };
    let write = doc_write(request.method(), request.uri().path());
    let request_id = header_text(headers, "x-request-id").map(str::to_owned);
    let response = next.run(request).await;
    match write {
        Some(write) if response.status().is_success() => {
            audit_write(&auth, &principal, write, request_id, response).await
        }
        _ => response,
    }
}

/// Reads what is left of a refused request's body first (bounded): an HTTP/1
/// client still sending it would otherwise see its connection reset instead
/// of the answer.
async fn drained(request: Request, response: Response) -> Response {
    let _ = axum::body::to_bytes(request.into_body(), 1 << 20).await;
    response
}

/// Records an accepted write; a replayed create (200, not 201) created nothing.
async fn audit_write(
    auth: &Auth,
    principal: &Principal,
    write: DocWrite,
    request_id: Option<String>,
    response: Response,
) -> Response {
    let status = response.status();
    let target = match write.target {
        Some(id) => Some(id),
        None if status == StatusCode::CREATED => response.extensions().get::<CreatedId>().map(|created| created.0.clone()),
        None => return response,
    };
    let entry = AuditEntry {
        at_ms: now_ms(),
        actor: principal.actor.clone(),
        operation: write.operation,
        target,
        status: status.as_u16(),
        request_id,
    };
    // The write stands either way; a gap in the trail is reported loudly.
    let (operation, target) = (entry.operation.clone(), entry.target.clone());
    if let Err(error) = auth.audit.record(entry).await {
        tracing::error!(operation = operation.as_str(), target = target.as_deref(), %error, "an accepted write could not be recorded in the audit trail");
    }
    response
}

/// The audit trail as JSON, oldest first (the component checks the `admin` scope).
pub async fn read_audit(
    State(auth): State<Arc<Auth>>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_AUDIT_PAGE).clamp(1, MAX_AUDIT_PAGE);
    match auth
        .keys
        .audit_since(query.since_ms.unwrap_or(0), limit)
        .await
    {
        Ok(entries) => {
            Json(json!({ "entries": entries.iter().map(audit_json).collect::<Vec<_>>() }))
                .into_response()
        }
        Err(error) => ApiFailure::from(error).into_response(),
    }
}

/// One entry as the API and `orders audit` show it.
pub fn audit_json(entry: &AuditEntry) -> Value {
    json!({
        "at": rfc3339(entry.at_ms),
        "at_ms": entry.at_ms,
        "actor": entry.actor,
        "operation": entry.operation,
        "target": entry.target,
        "status": entry.status,
        "request_id": entry.request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_writes_are_named_for_the_audit() {
        let create = doc_write(&Method::POST, "/v1/docs/orders").unwrap();
        assert_eq!(
            (create.operation.as_str(), create.target),
            ("order.create", None)
        );
        let update = doc_write(&Method::PATCH, "/v1/docs/orders/0123456789abcdef01234567").unwrap();
        assert_eq!(
            (update.operation.as_str(), update.target.as_deref()),
            ("order.update", Some("0123456789abcdef01234567"))
        );
        assert_eq!(
            doc_write(&Method::DELETE, "/v1/docs/orders/x")
                .unwrap()
                .operation,
            "order.delete"
        );
        assert!(doc_write(&Method::GET, "/v1/docs/orders/x").is_none());
        assert!(doc_write(&Method::POST, "/v1/logs/bundles/x").is_none());
    }

    #[test]
    fn refusals_carry_their_headers() {
        let missing = refusal_response(&Refused::unauthenticated(false, "no"));
        assert_eq!(missing.status(), 401);
        assert_eq!(
            missing.headers()["www-authenticate"],
            "Bearer realm=\"orders\""
        );
        let forbidden = Refused {
            refusal: Refusal::Forbidden,
            message: "m".into(),
            scope: Some(Scope::OrdersDelete),
            presented: true,
            retry_after_secs: None,
            rate_headers: None,
        };
        let forbidden = refusal_response(&forbidden);
        assert_eq!(forbidden.status(), 403);
        assert!(
            forbidden.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("scope=\"orders:delete\"")
        );
    }
}
