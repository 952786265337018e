//! `--auth`, and the refusal to run without it anywhere but loopback.

use std::net::SocketAddr;

use anyhow::{Result, bail};
use clap::Args;
use orders_sidecar::auth::AuthSettings;
use orders_sidecar::auth::jwt::JwtSettings;

#[derive(Debug, Clone, Args)]
pub struct AuthOptions {
    /// Access control: "on" (API keys with scopes, the default) or "off" (anyone may do anything; loopback only).
    #[arg(long = "auth", env = "ORDERS_AUTH", default_value = "on", value_parser = ["on", "off"])]
    pub auth: String,
    /// Requests per second for keys without a --rate-limit of their own, e.g. 100/s (default: unlimited).
    #[arg(long, env = "ORDERS_DEFAULT_RATE_LIMIT", value_parser = crate::keys::parse_rate)]
    pub default_rate_limit: Option<u32>,
    /// Also accept OIDC access tokens (RS256/ES256 JWTs) from this issuer (its `iss`).
    #[arg(long, env = "ORDERS_JWT_ISSUER", requires = "jwt_audience")]
    pub jwt_issuer: Option<String>,
    /// The audience (`aud`) those tokens must carry.
    #[arg(long, env = "ORDERS_JWT_AUDIENCE", requires = "jwt_issuer")]
    pub jwt_audience: Option<String>,
    /// The issuer's JWKS (default: <issuer>/.well-known/jwks.json).
    #[arg(long, env = "ORDERS_JWKS_URL", requires = "jwt_issuer")]
    pub jwks_url: Option<String>,
}

impl AuthOptions {
    pub fn enabled(&self) -> bool {
        self.auth == "on"
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
            (Some(issuer), Some(audience)) => {
                let jwks_url = self.jwks_url.clone().unwrap_or_else(|| {
                    format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'))
                });
                if !(jwks_url.starts_with("https://")
                    || jwks_url.starts_with("http://127.0.0.1")
                    || jwks_url.starts_with("http://localhost"))
                {
                    bail!(
                        "--jwks-url {jwks_url:?} must be https:// (plain http only on loopback), or the keys could be swapped on the way"
                    );
                }
                Some(JwtSettings {
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    jwks_url,
                })
            }
            _ => None,
        };
        Ok(AuthSettings {
            enabled: self.enabled(),
            default_rate_limit: self.default_rate_limit,
            jwt,
        })
    }

    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["--auth".into(), self.auth.clone()];
        if let Some(rate) = self.default_rate_limit {
            args.extend(["--default-rate-limit".into(), rate.to_string()]);
        }
        for (flag, value) in [
            ("--jwt-issuer", &self.jwt_issuer),
            ("--jwt-audience", &self.jwt_audience),
            ("--jwks-url", &self.jwks_url),
        ] {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value.clone()]);
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_refused_off_loopback() {
        let off = AuthOptions {
            auth: "off".into(),
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
            auth: "on".into(),
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
