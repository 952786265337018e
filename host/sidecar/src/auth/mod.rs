//! Access control, checked in the sidecar (docs/adr/0010): components forward
//! the caller's credential and the scope their operation needs with every
//! sidecar call; the check runs before the operation, refusals go back as
//! 401/403/429 for the component to pass through, and accepted writes are
//! recorded in the audit trail.

pub mod api_key;
pub mod audit_trail;
pub mod clock;
pub mod http;
pub mod jwt;
pub mod limiter;
pub mod verifier;

use std::sync::Arc;
use std::time::Duration;

use crate::store::keys::KeyStore;
use audit_trail::AuditTrail;
use limiter::Limiter;
use verifier::Verifier;

/// How the sidecar checks callers; validated by the CLI.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `false` only with `--auth off`: every call is let through (and audited as `anonymous`).
    pub enabled: bool,
    /// Requests per second for credentials without a limit of their own; `None`: unlimited.
    pub default_rate_limit: Option<u32>,
    /// OIDC access tokens from this issuer, besides API keys.
    pub jwt: Option<jwt::JwtSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            default_rate_limit: None,
            jwt: None,
        }
    }
}

/// Everything the check needs at run time, built once at start.
pub struct Auth {
    pub settings: AuthSettings,
    pub keys: Arc<dyn KeyStore>,
    /// Where accepted writes are recorded (batched: see its module).
    pub audit: AuditTrail,
    pub verifier: Verifier,
    pub limiter: Limiter,
}

impl Auth {
    /// Starts the audit trail's writer: call it on the Tokio runtime.
    pub fn new(
        settings: AuthSettings,
        keys: Arc<dyn KeyStore>,
        limiter: Limiter,
        timeout: Duration,
    ) -> Self {
        let jwt = settings.jwt.clone().map(jwt::JwtVerifier::new);
        Self {
            verifier: Verifier::new(keys.clone(), jwt, timeout),
            audit: AuditTrail::start(keys.clone()),
            settings,
            keys,
            limiter,
        }
    }
}
