//! `--auth`, and the refusal to run without it anywhere but loopback.

use std::net::SocketAddr;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use orders_sidecar::auth::AuthSettings;
use orders_sidecar::auth::jwt::JwtSettings;
use serde::Serialize;
use url::Url;

use crate::settings::values::http_url;

/// An issuer must be an http(s) URL.
fn issuer(value: &str) -> Result<String, String> {
    http_url(value).map(|_| value.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    On,
    Off,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct AuthOptions {
    /// Access control: "on" (API keys with scopes, the default) or "off" (anyone may do anything; loopback only).
    #[arg(long = "auth", env = "ORDERS_AUTH", value_enum, default_value_t = AuthMode::On)]
    pub auth: AuthMode,
    /// Requests per second for keys without a --rate-limit of their own, e.g. 100/s (default: unlimited).
    #[arg(long, env = "ORDERS_DEFAULT_RATE_LIMIT", value_parser = crate::keys::parse_rate)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_rate_limit: Option<u32>,
    /// Also accept OIDC access tokens (RS256/ES256 JWTs) from this issuer (its `iss`).
    // Kept as written: OIDC compares `iss` as an exact string, which a
    // parsed URL would not preserve (it adds a trailing slash).
    #[arg(long, env = "ORDERS_JWT_ISSUER", requires = "jwt_audience", value_parser = issuer)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    /// The audience (`aud`) those tokens must carry.
    #[arg(long, env = "ORDERS_JWT_AUDIENCE", requires = "jwt_issuer")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    /// The issuer's JWKS (default: <issuer>/.well-known/jwks.json).
    #[arg(long, env = "ORDERS_JWKS_URL", requires = "jwt_issuer", value_parser = http_url)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<Url>,
}

impl AuthOptions {
    pub fn enabled(&self) -> bool {
        self.auth == AuthMode::On
    }

    /// The JWKS, fetched over https (plain http only on loopback) so the
    /// keys cannot be swapped on the way.
    fn jwks(&self, issuer: &str) -> Result<Url> {
        let url = match &self.jwks_url {
            Some(url) => url.clone(),
            None => http_url(&format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'))).map_err(anyhow::Error::msg)?,
        };
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if url.scheme() != "https" && !loopback {
            bail!("--jwks-url {:?} must be https:// (plain http only on loopback), or the keys could be swapped on the way", url.as_str());
        }
        Ok(url)
    }

    /// The sidecar's settings; `off` only when `listen` (where clients reach
    /// the product) is a loopback address, so nobody else can use the hole.
    pub fn settings(&self, listen: SocketAddr, flag: &str) -> Result<AuthSettings> {
        if !self.enabled() {
            if !listen.ip().is_loopback() {
                bail!(
                    "--auth off is refused because {flag} {listen} is not a loopback address: anyone who can reach it could read and delete every order; keep --auth on and create keys with `orders keys create`"
                );
            }
            eprintln!(
                "warning: --auth off: access control is disabled; anyone who can reach {listen} may read, change and delete every order"
            );
        }
        let jwt = match (&self.jwt_issuer, &self.jwt_audience) {
            (Some(issuer), Some(audience)) => Some(JwtSettings {
                issuer: issuer.clone(),
                audience: audience.clone(),
                jwks_url: self.jwks(issuer)?.to_string(),
            }),
            _ => None,
        };
        Ok(AuthSettings { enabled: self.enabled(), default_rate_limit: self.default_rate_limit, jwt })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_refused_off_loopback() {
        let off = AuthOptions {
            auth: AuthMode::Off,
            default_rate_limit: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwks_url: None,
        };
        assert!(
            off.settings("0.0.0.0:3000".parse().unwrap(), "--listen")
                .is_err()
        );
        assert!(
            off.settings("192.168.1.5:3000".parse().unwrap(), "--listen")
                .is_err()
        );
        assert!(
            !off.settings("127.0.0.1:3000".parse().unwrap(), "--listen")
                .unwrap()
                .enabled
        );
        assert!(
            !off.settings("[::1]:3000".parse().unwrap(), "--listen")
                .unwrap()
                .enabled
        );
        let on = AuthOptions {
            auth: AuthMode::On,
            default_rate_limit: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwks_url: None,
        };
        assert!(
            on.settings("0.0.0.0:3000".parse().unwrap(), "--listen")
                .unwrap()
                .enabled
        );
    }
}
