//! Checks a caller's credential against the scope an operation needs.
//!
//! Keys are looked up by hash and remembered for [`KEY_CACHE_TTL`], found or
//! not, so a request costs no store round trip of its own while a key is
//! warm, and a key revoked by `orders keys revoke` (on any machine sharing the
//! store) is refused by every sidecar within that bound. A lookup is trusted
//! from the moment it began, not ended, so a slow answer does not stretch it.
//!
//! A key in use stays warm: the first request to find its lookup older than
//! [`KEY_REFRESH_AFTER`] starts one lookup in the background and is served
//! meanwhile, so requests wait on the store only for a key not seen lately —
//! and then every request for that key waits on the same lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::Shared;
use tokio::sync::oneshot;

use orders_access::{Refusal, Scope};

use super::api_key::{hash_key, looks_like_key};
use super::clock::now_ms;
use super::jwt::JwtVerifier;
use crate::store::StoreError;
use crate::store::keys::{KeyRecord, KeyStore};

/// How long a lookup is trusted; a revoked key is refused everywhere within it.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Past this age a lookup still in use is made anew in the background.
const KEY_REFRESH_AFTER: Duration = Duration::from_secs(1);
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
    /// When the lookup that found it began.
    fetched: Instant,
    /// Shared, so a warm lookup copies no strings.
    key: Option<Arc<KeyRecord>>,
}

type KeyLookup = Result<Option<Arc<KeyRecord>>, StoreError>;
/// A lookup under way, which every request for its key awaits.
type InFlight = Shared<oneshot::Receiver<KeyLookup>>;

#[derive(Default)]
struct KeyCache {
    found: HashMap<String, Cached>,
    loading: HashMap<String, InFlight>,
}

pub struct Verifier {
    keys: Arc<dyn KeyStore>,
    jwt: Option<JwtVerifier>,
    cache: Arc<Mutex<KeyCache>>,
    touched: Mutex<HashMap<String, i64>>,
    timeout: Duration,
}

impl Verifier {
    pub fn new(keys: Arc<dyn KeyStore>, jwt: Option<JwtVerifier>, timeout: Duration) -> Self {
        Self {
            keys,
            jwt,
            cache: Arc::default(),
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
        let in_flight = {
            let mut cache = self.cache.lock().expect("key cache lock");
            let warm = cache.found.get(hash).map(|c| (c.fetched.elapsed(), c.key.clone()));
            match warm {
                Some((age, key)) if age < KEY_CACHE_TTL => {
                    if age >= KEY_REFRESH_AFTER && !cache.loading.contains_key(hash) {
                        drop(self.start_lookup(&mut cache, hash));
                    }
                    return Ok(key);
                }
                _ => match cache.loading.get(hash) {
                    Some(in_flight) => in_flight.clone(),
                    None => self.start_lookup(&mut cache, hash),
                },
            }
        };
        match in_flight.await {
            Ok(found) => found.map_err(CheckFailed),
            Err(_) => Err(CheckFailed(StoreError::Unavailable("the key lookup stopped unanswered".into()))),
        }
    }

    /// Starts looking `hash` up in a task of its own, which fills the cache
    /// whether or not the requests awaiting it are still there.
    fn start_lookup(&self, cache: &mut KeyCache, hash: &str) -> InFlight {
        let (tell, answer) = oneshot::channel();
        let in_flight = answer.shared();
        cache.loading.insert(hash.to_owned(), in_flight.clone());
        let (keys, shared_cache, hash, timeout) = (self.keys.clone(), self.cache.clone(), hash.to_owned(), self.timeout);
        tokio::spawn(async move {
            let began = Instant::now();
            let found = match tokio::time::timeout(timeout, keys.key_by_hash(&hash)).await {
                Ok(Ok(found)) => Ok(found.filter(|key| !key.is_revoked()).map(Arc::new)),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(StoreError::Unavailable(format!("the key lookup took longer than {timeout:?}"))),
            };
            {
                let mut cache = shared_cache.lock().expect("key cache lock");
                cache.loading.remove(&hash);
                if let Ok(key) = &found {
                    if cache.found.len() >= KEY_CACHE_ENTRIES {
                        cache.found.clear();
                    }
                    cache.found.insert(hash, Cached { fetched: began, key: key.clone() });
                }
            }
            let _ = tell.send(found);
        });
        in_flight
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

    /// The key store, counting lookups and able to hold them until released.
    struct CountedKeys {
        inner: Arc<dyn KeyStore>,
        lookups: std::sync::atomic::AtomicUsize,
        hold: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl KeyStore for CountedKeys {
        async fn create_key(&self, key: &KeyRecord) -> crate::store::StoreResult<()> {
            self.inner.create_key(key).await
        }
        async fn key_by_hash(&self, hash: &str) -> crate::store::StoreResult<Option<KeyRecord>> {
            self.lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(self.hold.acquire().await.expect("open"));
            self.inner.key_by_hash(hash).await
        }
        async fn list_keys(&self) -> crate::store::StoreResult<Vec<KeyRecord>> {
            self.inner.list_keys().await
        }
        async fn revoke_key(&self, id_or_name: &str, at_ms: i64) -> crate::store::StoreResult<crate::store::keys::Revoked> {
            self.inner.revoke_key(id_or_name, at_ms).await
        }
        async fn touch_key(&self, id: &str, at_ms: i64) -> crate::store::StoreResult<()> {
            self.inner.touch_key(id, at_ms).await
        }
        async fn append_audit(&self, entries: &[crate::store::keys::AuditEntry]) -> crate::store::StoreResult<()> {
            self.inner.append_audit(entries).await
        }
        async fn audit_since(&self, since_ms: i64, limit: u32) -> crate::store::StoreResult<Vec<crate::store::keys::AuditEntry>> {
            self.inner.audit_since(since_ms, limit).await
        }
    }

    /// Requests for a key not seen lately share one lookup; a key in use is
    /// looked up anew in the background, its requests served meanwhile; a
    /// revocation still takes effect within the bound.
    #[tokio::test(flavor = "multi_thread")]
    async fn requests_share_one_lookup_and_a_key_in_use_never_waits_on_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn KeyStore> = Arc::new(SqliteKeys::open(dir.path()).expect("open"));
        let created = create_key(&*inner, "shared", vec![Scope::OrdersRead], None, "test").await.expect("create");
        let keys = Arc::new(CountedKeys { inner, lookups: Default::default(), hold: tokio::sync::Semaphore::new(0) });
        let lookups = || keys.lookups.load(std::sync::atomic::Ordering::SeqCst);
        let verifier = Arc::new(Verifier::new(keys.clone(), None, Duration::from_secs(5)));
        let header = format!("Bearer {}", created.text);
        let check = || {
            let (verifier, header) = (verifier.clone(), header.clone());
            tokio::spawn(async move { verifier.verify(Some(&header), Scope::OrdersRead).await.expect("check").expect("granted") })
        };

        let cold: Vec<_> = (0..20).map(|_| check()).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(lookups(), 1, "20 requests for a cold key: one lookup");
        keys.hold.add_permits(1_000);
        for request in cold {
            request.await.expect("request");
        }

        // Past the refresh age, requests are served at once (the store held)
        // and one lookup runs meanwhile.
        keys.hold.forget_permits(1_000);
        tokio::time::sleep(KEY_REFRESH_AFTER + Duration::from_millis(100)).await;
        for _ in 0..20 {
            tokio::time::timeout(Duration::from_millis(500), check()).await.expect("served from the cache").expect("request");
        }
        assert_eq!(lookups(), 2, "one lookup in the background");
        keys.hold.add_permits(1_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        check().await.expect("request");
        assert_eq!(lookups(), 2, "refreshed: warm again");

        // Revoked: refused within the bound, though the key is in use throughout.
        keys.revoke_key(&created.record.id, now_ms()).await.expect("revoke");
        let revoked_at = Instant::now();
        loop {
            let answer = verifier.verify(Some(&header), Scope::OrdersRead).await.expect("check");
            if answer.is_err() {
                break;
            }
            assert!(revoked_at.elapsed() < KEY_CACHE_TTL, "a revoked key is refused within {KEY_CACHE_TTL:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
