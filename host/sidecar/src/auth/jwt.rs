//! OIDC access tokens (JWT) from one configured issuer: RS256 and ES256 only,
//! keys from the issuer's JWKS, scopes from the standard `scope` claim.
//!
//! The JWKS is cached and fetched again when a token names an unknown `kid`
//! (the issuer rotated its keys), at most once per [`MIN_REFETCH`], so a
//! stream of made-up `kid`s cannot turn into a stream of fetches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use orders_access::Scope;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::verifier::{Principal, Refused};

/// The least time between two fetches of the JWKS.
pub const MIN_REFETCH: Duration = Duration::from_secs(2);
/// How long a fetched JWKS is used before it is fetched again anyway.
const JWKS_TTL: Duration = Duration::from_secs(600);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
}

struct Jwks {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    http: reqwest::Client,
    jwks: Mutex<Jwks>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
}

fn refused(message: impl Into<String>) -> Refused {
    Refused::unauthenticated(true, message)
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            http,
            jwks: Mutex::new(Jwks {
                keys: HashMap::new(),
                fetched: None,
            }),
        }
    }

    /// Whether `token` has the shape of a JWT (three base64url parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, Refused> {
        let header = decode_header(token).map_err(|_| refused("The token is not a valid JWT"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(refused(
                "The token's algorithm is not accepted (RS256 or ES256)",
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| refused("The token names no key (kid)"))?;
        let (alg, key) = self.key(&kid).await?;
        if alg != header.alg {
            return Err(refused("The token's algorithm does not match its key"));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = decode::<Claims>(token, &key, &validation)
            .map_err(|e| refused(format!("The token was refused: {}", describe(e.kind()))))?
            .claims;
        Ok(Principal {
            actor: format!("sub:{}", claims.sub),
            scopes: claims
                .scope
                .split_whitespace()
                .filter_map(Scope::parse)
                .collect(),
            rate_limit: None,
        })
    }

    /// The key with this id, fetching the JWKS when it is unknown (bounded) or old.
    async fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), Refused> {
        let mut jwks = self.jwks.lock().await;
        let stale = jwks.fetched.is_none_or(|at| at.elapsed() > JWKS_TTL);
        let unknown = !jwks.keys.contains_key(kid);
        let may_fetch = jwks.fetched.is_none_or(|at| at.elapsed() >= MIN_REFETCH);
        if (stale || unknown) && may_fetch {
            match self.fetch().await {
                Ok(keys) => {
                    *jwks = Jwks {
                        keys,
                        fetched: Some(Instant::now()),
                    }
                }
                Err(error) => {
                    tracing::warn!(url = %self.settings.jwks_url, %error, "cannot fetch the JWKS; using the keys already known");
                    jwks.fetched = Some(Instant::now());
                }
            }
        }
        jwks.keys
            .get(kid)
            .cloned()
            .ok_or_else(|| refused("The token's key (kid) is not one of the issuer's"))
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, (Algorithm, DecodingKey)>> {
        let set: JwkSet = self
            .http
            .get(&self.settings.jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                    if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            keys.insert(kid, (alg, key));
        }
        tracing::info!(url = %self.settings.jwks_url, keys = keys.len(), "fetched the JWKS");
        Ok(keys)
    }
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "it has expired",
        ErrorKind::ImmatureSignature => "it is not valid yet",
        ErrorKind::InvalidAudience => "it is for another audience",
        ErrorKind::InvalidIssuer => "it is from another issuer",
        ErrorKind::InvalidSignature => "its signature is wrong",
        ErrorKind::MissingRequiredClaim(_) => "it lacks a required claim",
        _ => "it is malformed",
    }
}
