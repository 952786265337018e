//! Rate limits: per credential (its own limit, or the product's default) and
//! for failed authentications per client address, so keys cannot be guessed
//! at speed. Fixed one-window counters: in Redis when it is configured, so
//! every sidecar shares them, in this process otherwise.
//!
//! A limiter that cannot reach Redis lets the request through (and says so in
//! the log): a rate limit protects capacity, and refusing every client because
//! the counter store is down would be the outage it is meant to prevent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;

/// Failed authentications one client address may make per [`FAILED_AUTH_WINDOW_SECS`].
pub const FAILED_AUTH_LIMIT: u32 = 20;
pub const FAILED_AUTH_WINDOW_SECS: u64 = 10;
/// Counters kept in process at most; past it the oldest windows are dropped.
const MEMORY_BUCKETS: usize = 100_000;

/// Where a counter stands after a hit (or a look).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u32,
    pub used: u32,
    pub window_secs: u64,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

impl Window {
    pub fn exceeded(&self) -> bool {
        self.used > self.limit
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    pub fn headers(&self, policy: &str) -> (String, String) {
        let remaining = self.limit.saturating_sub(self.used);
        (
            format!("\"{policy}\";q={};w={}", self.limit, self.window_secs),
            format!("\"{policy}\";r={remaining};t={}", self.reset_secs.max(1)),
        )
    }
}

pub enum Limiter {
    Memory(Mutex<HashMap<String, (u64, u32)>>),
    Redis {
        connection: ConnectionManager,
        namespace: String,
    },
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Limiter {
    pub fn memory() -> Self {
        Limiter::Memory(Mutex::default())
    }

    pub fn redis(connection: ConnectionManager, namespace: &str) -> Self {
        Limiter::Redis {
            connection,
            namespace: namespace.to_owned(),
        }
    }

    /// Counts one event on `bucket`; `count: false` only looks.
    pub async fn hit(&self, bucket: &str, limit: u32, window_secs: u64, count: bool) -> Window {
        let now = now_secs();
        let window_secs = window_secs.max(1);
        let window = now / window_secs;
        let reset_secs = (window + 1) * window_secs - now;
        let used = match self {
            // A look (every keyed request looks at its client's failures)
            // neither allocates nor adds a bucket.
            Limiter::Memory(buckets) if !count => {
                let buckets = buckets.lock().expect("limiter lock");
                buckets.get(bucket).filter(|(at, _)| *at == window).map_or(0, |(_, used)| *used)
            }
            Limiter::Memory(buckets) => {
                let mut buckets = buckets.lock().expect("limiter lock");
                if buckets.len() >= MEMORY_BUCKETS {
                    buckets.retain(|_, (w, _)| *w == window);
                }
                let entry = buckets.entry(bucket.to_owned()).or_insert((window, 0));
                if entry.0 != window {
                    *entry = (window, 0);
                }
                entry.1 = entry.1.saturating_add(1);
                entry.1
            }
            Limiter::Redis {
                connection,
                namespace,
            } => {
                let key = format!("{namespace}:ratelimit:{bucket}:{window}");
                let mut connection = connection.clone();
                let call = async {
                    if count {
                    redis::pipe()
                        .atomic()
                        .cmd("INCR")
                        .arg(&key)
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(window_secs + 1)
                        .ignore()
                        .query_async::<(u32,)>(&mut connection)
                        .await
                        .map(|(n,)| n)
                } else {
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<u32>>(&mut connection)
                        .await
                        .map(Option::unwrap_or_default)
                    }
                };
                // A counter that does not answer promptly must not hold the request up.
                let result = tokio::time::timeout(std::time::Duration::from_millis(200), call)
                    .await
                    .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::IoError, "timed out after 200 ms"))));
                match result {
                    Ok(used) => used,
                    Err(error) => {
                        tracing::warn!(%error, "rate limit counter unavailable; letting the request through");
                        0
                    }
                }
            }
        };
        Window {
            limit,
            used,
            window_secs,
            reset_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_allows_its_limit_then_refuses() {
        let limiter = Limiter::memory();
        for _ in 0..3 {
            assert!(!limiter.hit("key:a", 3, 60, true).await.exceeded());
        }
        let fourth = limiter.hit("key:a", 3, 60, true).await;
        assert!(fourth.exceeded());
        assert!(
            !limiter.hit("key:b", 3, 60, true).await.exceeded(),
            "buckets are separate"
        );
        assert!(
            limiter.hit("key:a", 3, 60, false).await.exceeded(),
            "looking does not count"
        );
        let (policy, state) = fourth.headers("key");
        assert_eq!(policy, "\"key\";q=3;w=60");
        assert!(state.starts_with("\"key\";r=0;t="), "{state}");
    }
}
