//! The access-control protocol between components and the sidecar
//! (docs/adr/0010-access-control-in-the-sidecar.md).
//!
//! A component forwards the caller's `Authorization` header and the scope its
//! operation needs with every sidecar call; the sidecar checks both before the
//! operation and answers a refusal with one of the [`Refusal`] codes, which the
//! component passes to the client unchanged in shape.

use std::fmt;

/// The caller's `Authorization` header, as the client sent it.
pub const CREDENTIAL_HEADER: &str = "x-orders-credential";
/// The [`Access`] the operation needs.
pub const SCOPE_HEADER: &str = "x-orders-scope";
/// Where the caller came from (the client address the edge saw), for
/// throttling failed authentications.
pub const CLIENT_HEADER: &str = "x-orders-client";

/// Set on the first sidecar call of a client request only: the one the
/// credential's rate limit counts (a request may make several calls).
pub const COUNT_HEADER: &str = "x-orders-count";

/// Every API key starts with this, so secret scanners can find leaked ones.
pub const KEY_PREFIX: &str = "ordk_";

/// What a client may do. `admin` holds every other scope, plus keys and the
/// audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    OrdersRead,
    OrdersWrite,
    OrdersDelete,
    Bundles,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::OrdersDelete,
        Scope::Bundles,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::OrdersDelete => "orders:delete",
            Scope::Bundles => "bundles",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }

    /// Whether a holder of `granted` may do what needs `self`.
    pub fn granted_by(self, granted: &[Scope]) -> bool {
        granted.iter().any(|g| *g == self || *g == Scope::Admin)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a sidecar call needs: a scope, or nothing because the component's
/// route is public (health, readiness, signed download links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Scope(Scope),
}

impl Access {
    pub fn header_value(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Scope(scope) => scope.as_str(),
        }
    }

    pub fn parse(text: &str) -> Option<Access> {
        if text == "public" {
            Some(Access::Public)
        } else {
            Scope::parse(text).map(Access::Scope)
        }
    }
}

/// Why the sidecar refused a caller (not a component): the `error` code of its
/// JSON answer. Components pass these through with the status and headers;
/// every other non-2xx answer of the sidecar is the service's own fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no credential, or an unknown, revoked or expired one.
    Unauthenticated,
    /// 403: a valid credential without the scope.
    Forbidden,
    /// 429: the caller's rate limit is spent (or it failed to authenticate too often).
    RateLimited,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::Unauthenticated,
        Refusal::Forbidden,
        Refusal::RateLimited,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "client_unauthenticated",
            Refusal::Forbidden => "client_forbidden",
            Refusal::RateLimited => "client_rate_limited",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Refusal::Unauthenticated => 401,
            Refusal::Forbidden => 403,
            Refusal::RateLimited => 429,
        }
    }

    pub fn from_code(code: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// The headers of a refusal a component copies to its client.
pub const PASSED_HEADERS: [&str; 4] = [
    "www-authenticate",
    "retry-after",
    "ratelimit-policy",
    "ratelimit",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_names() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            assert_eq!(Access::parse(scope.as_str()), Some(Access::Scope(scope)));
        }
        assert_eq!(Scope::parse("orders"), None);
        assert_eq!(Access::parse("public"), Some(Access::Public));
    }

    #[test]
    fn admin_grants_every_scope_and_others_only_themselves() {
        for scope in Scope::ALL {
            assert!(scope.granted_by(&[Scope::Admin]));
            assert!(scope.granted_by(&[scope]));
        }
        assert!(!Scope::OrdersWrite.granted_by(&[Scope::OrdersRead, Scope::Bundles]));
        assert!(!Scope::Admin.granted_by(&[
            Scope::OrdersRead,
            Scope::OrdersWrite,
            Scope::OrdersDelete,
            Scope::Bundles
        ]));
        assert!(!Scope::OrdersRead.granted_by(&[]));
    }

    #[test]
    fn refusal_codes_round_trip() {
        for refusal in Refusal::ALL {
            assert_eq!(Refusal::from_code(refusal.code()), Some(refusal));
        }
        assert_eq!(Refusal::from_code("unauthorized"), None);
    }
}
