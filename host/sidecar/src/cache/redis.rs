//! The Redis cache, shared by every sidecar. Each operation is one Lua
//! script, so reading the generation and the entry (or checking it and
//! filling) is one atomic round trip. Keys live under an epoch that
//! `reset` bumps: after Redis was unreachable during writes, the sidecar
//! that missed invalidations retires everything at once.
//!
//! The scripts build their keys from arguments, which is fine on a single
//! Redis or a primary with replicas, not on Redis Cluster.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Script, Value as RedisValue};

use super::{Cache, CacheError, CacheResult, EntryKind, Generation, Lookup};

const KEY_PREFIX: &str = r#"
local ns, collection, kind, key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local epoch = redis.call('GET', ns .. ':epoch') or '0'
local base = ns .. ':' .. epoch .. ':' .. collection
local generation = redis.call('GET', base .. ':gen') or '0'
local entry
if kind == 'doc' then entry = base .. ':doc:' .. key else entry = base .. ':page:' .. generation .. ':' .. key end
"#;

pub struct RedisCache {
    connection: ConnectionManager,
    namespace: String,
    ttl: Duration,
    lookup: Script,
    fill: Script,
    invalidate: Script,
}

fn unavailable(error: redis::RedisError) -> CacheError {
    CacheError(format!("redis: {error}"))
}

impl RedisCache {
    /// Connects with a connection manager, which reconnects by itself
    /// after Redis restarts; commands fail fast while it is down.
    pub async fn connect(url: &str, namespace: &str, ttl: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("the Redis URL (--redis-url / ORDERS_REDIS_URL) is invalid: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1);
        let host = client.get_connection_info().addr.to_string();
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {host} (from --redis-url / ORDERS_REDIS_URL): {e}"))?;
        Ok(Self {
            connection,
            namespace: namespace.to_owned(),
            ttl,
            lookup: Script::new(&format!("{KEY_PREFIX}\nreturn {{generation, redis.call('GET', entry)}}")),
            fill: Script::new(&format!(
                "{KEY_PREFIX}\nif generation ~= ARGV[5] then return 0 end\nredis.call('SET', entry, ARGV[6], 'EX', ARGV[7])\nreturn 1"
            )),
            invalidate: Script::new(&format!(
                "{KEY_PREFIX}\nredis.call('INCR', base .. ':gen')\nredis.call('DEL', base .. ':doc:' .. key)\nreturn 1"
            )),
        })
    }
}

impl RedisCache {
    /// The shared connection, for the job queue on the same Redis.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn lookup(&self, collection: &str, kind: EntryKind, key: &str) -> CacheResult<Lookup> {
        let mut connection = self.connection.clone();
        let (generation, value): (String, Option<String>) = self
            .lookup
            .arg(&self.namespace)
            .arg(collection)
            .arg(kind.as_str())
            .arg(key)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(Lookup { value, generation: Generation(generation) })
    }

    async fn fill(&self, collection: &str, kind: EntryKind, key: &str, seen: &Generation, value: &str) -> CacheResult<()> {
        let mut connection = self.connection.clone();
        let _: RedisValue = self
            .fill
            .arg(&self.namespace)
            .arg(collection)
            .arg(kind.as_str())
            .arg(key)
            .arg(&seen.0)
            .arg(value)
            .arg(self.ttl.as_secs().max(1))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn invalidate(&self, collection: &str, id: &str) -> CacheResult<()> {
        let mut connection = self.connection.clone();
        let _: RedisValue = self
            .invalidate
            .arg(&self.namespace)
            .arg(collection)
            .arg("doc")
            .arg(id)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn reset(&self) -> CacheResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("INCR")
            .arg(format!("{}:epoch", self.namespace))
            .query_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn ping(&self) -> CacheResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.map(drop).map_err(unavailable)
    }
}
