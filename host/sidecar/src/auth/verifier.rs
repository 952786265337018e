//! Checks a caller's credential against the scope an operation needs.
//!
//! Keys are looked up by hash and remembered for [`KEY_CACHE_TTL`], found or
//! not, so a request costs no store round trip of its own while a key is
//! warm, and a key revoked by `orders keys revoke` (on any machine sharing the
//! store) is refused by every sidecar within that bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orders_access::{Refusal, Scope};

use super::api_key::{hash_key, looks_like_key};
use super::clock::now_ms;
use super::jwt::JwtVerifier;
use crate::store::StoreError;
use crate::store::keys::{KeyRecord, KeyStore};

/// How long a lookup is trusted; a revoked key is refused everywhere within it.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Remembered lookups at most; past it the cache starts over.
const KEY_CACHE_ENTRIES: usize = 10_000;
/// `last_used` is written at most this often per key.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Who is calling, once their credential checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<id>` or `sub:<subject>`: what the audit trail records.
    pub actor: String,
    pub scopes: Vec<Scope>,
    /// Requests per second, when the credential sets its own.
    pub rate_limit: Option<u32>,
}

/// A refusal, with what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub message: String,
    /// The scope that was missing (403), or whether a credential was presented (401).
    pub scope: Option<Scope>,
    pub presented: bool,
    /// Seconds until a retry may succeed (429).
    pub retry_after_secs: Option<u64>,
    /// The `RateLimit-Policy` / `RateLimit` header values (429).
    pub rate_headers: Option<(String, String)>,
}

impl Refused {
    pub fn unauthenticated(presented: bool, message: impl Into<String>) -> Self {
        Self {
            refusal: Refusal::Unauthenticated,
            message: message.into(),
            scope: None,
            presented,
            retry_after_secs: None,
            rate_headers: None,
        }
    }

    fn forbidden(scope: Scope) -> Self {
        Self {
            refusal: Refusal::Forbidden,
            message: format!("This credential lacks the scope {scope} this operation needs"),
            scope: Some(scope),
            presented: true,
            retry_after_secs: None,
            rate_headers: None,
        }
    }
}

/// Why a check could not be made at all (the key store is down): a 503.
#[derive(Debug)]
pub struct CheckFailed(pub StoreError);

struct Cached {
    fetched: Instant,
    /// Shared, so a warm lookup copies no strings.
    key: Option<Arc<KeyRecord>>,
}

pub struct Verifier {
    keys: Arc<dyn KeyStore>,
    jwt: Option<JwtVerifier>,
    cache: Mutex<HashMap<String, Cached>>,
    touched: Mutex<HashMap<String, i64>>,
    timeout: Duration,
}

impl Verifier {
    pub fn new(keys: Arc<dyn KeyStore>, jwt: Option<JwtVerifier>, timeout: Duration) -> Self {
        Self {
            keys,
            jwt,
            cache: Mutex::default(),
            touched: Mutex::default(),
            timeout,
        }
    }

    /// Checks `authorization` (the client's header, as sent) for `needed`.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        needed: Scope,
    ) -> Result<Result<Principal, Refused>, CheckFailed> {
        let Some(header) = authorization.map(str::trim).filter(|h| !h.is_empty()) else {
            return Ok(Err(Refused::unauthenticated(
                false,
                "This operation needs a credential: send Authorization: Bearer <API key>",
            )));
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
        else {
            return Ok(Err(Refused::unauthenticated(
                true,
                "Send the credential as Authorization: Bearer <API key>",
            )));
        };
        if !looks_like_key(token) {
            return Ok(match &self.jwt {
                Some(jwt) if JwtVerifier::looks_like_jwt(token) => match jwt.verify(token).await {
                    Ok(principal) if needed.granted_by(&principal.scopes) => Ok(principal),
                    Ok(_) => Err(Refused::forbidden(needed)),
                    Err(refused) => Err(refused),
                },
                _ => Err(Refused::unauthenticated(
                    true,
                    "The credential is not a valid API key or token",
                )),
            });
        }
        let Some(key) = self.lookup(&hash_key(token)).await? else {
            return Ok(Err(Refused::unauthenticated(
                true,
                "The API key is unknown or revoked",
            )));
        };
        if !needed.granted_by(&key.scopes) {
            return Ok(Err(Refused::forbidden(needed)));
        }
        self.touch(&key.id);
        Ok(Ok(Principal {
            actor: format!("key:{}", key.id),
            scopes: key.scopes.clone(),
            rate_limit: key.rate_limit,
        }))
    }

    /// The active key with this hash, from the cache while it is fresh.
    async fn lookup(&self, hash: &str) -> Result<Option<Arc<KeyRecord>>, CheckFailed> {
        {
            let cache = self.cache.lock().expect("key cache lock");
            if let Some(cached) = cache
                .get(hash)
                .filter(|c| c.fetched.elapsed() < KEY_CACHE_TTL)
            {
                return Ok(cached.key.clone());
            }
        }
        let found = match tokio::time::timeout(self.timeout, self.keys.key_by_hash(hash)).await {
            Ok(Ok(found)) => found.filter(|key| !key.is_revoked()).map(Arc::new),
            Ok(Err(error)) => return Err(CheckFailed(error)),
            Err(_) => {
                return Err(CheckFailed(StoreError::Unavailable(format!(
                    "the key lookup took longer than {:?}",
                    self.timeout
                ))));
            }
        };
        let mut cache = self.cache.lock().expect("key cache lock");
        if cache.len() >= KEY_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            hash.to_owned(),
            Cached {
                fetched: Instant::now(),
                key: found.clone(),
            },
        );
        Ok(found)
    }

    /// Records the key's use in the background, at most once a minute.
    fn touch(&self, key_id: &str) {
        let now = now_ms();
        {
            let mut touched = self.touched.lock().expect("touch lock");
            if touched
                .get(key_id)
                .is_some_and(|last| now - last < TOUCH_EVERY_MS)
            {
                return;
            }
            if touched.len() >= KEY_CACHE_ENTRIES {
                touched.clear();
            }
            touched.insert(key_id.to_owned(), now);
        }
        let (keys, key_id) = (self.keys.clone(), key_id.to_owned());
        tokio::spawn(async move {
            if let Err(error) = keys.touch_key(&key_id, now).await {
                tracing::warn!(key_id, %error, "could not record a key's last use");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::api_key::create_key;
    use crate::store::keys::sqlite::SqliteKeys;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_warm_check_costs_no_store_call_and_its_time_is_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys: Arc<dyn KeyStore> = Arc::new(SqliteKeys::open(dir.path()).expect("open"));
        let created = create_key(&*keys, "bench", vec![Scope::OrdersRead], None, "test")
            .await
            .expect("create");
        let verifier = Verifier::new(keys.clone(), None, Duration::from_secs(5));
        let header = format!("Bearer {}", created.text);
        let granted = verifier
            .verify(Some(&header), Scope::OrdersRead)
            .await
            .expect("check")
            .expect("granted");
        assert_eq!(granted.actor, format!("key:{}", created.record.id));
        let refused = verifier
            .verify(Some(&header), Scope::OrdersDelete)
            .await
            .expect("check")
            .expect_err("refused");
        assert_eq!(
            (refused.refusal, refused.scope),
            (Refusal::Forbidden, Some(Scope::OrdersDelete))
        );
        let rounds = 100_000;
        let started = Instant::now();
        for _ in 0..rounds {
            verifier
                .verify(Some(&header), Scope::OrdersRead)
                .await
                .expect("check")
                .expect("granted");
        }
        let per_check = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!("a warm API key check (SHA-256 + cache lookup): {per_check:.2} µs");
        // Revoked in the store: refused once the cache entry is older than its bound.
        keys.revoke_key(&created.record.id, now_ms())
            .await
            .expect("revoke");
        tokio::time::sleep(KEY_CACHE_TTL).await;
        let after = verifier
            .verify(Some(&header), Scope::OrdersRead)
            .await
            .expect("check")
            .expect_err("revoked");
        assert_eq!(after.refusal, Refusal::Unauthenticated);
    }
}
