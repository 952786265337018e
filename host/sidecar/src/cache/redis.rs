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

use super::{Cache, CacheError, CacheResult, Entry, EntryKind, Generation, Lookup, kept_for};

/// Every script starts here: the collection's keys under the current
/// epoch, its generation, and the document's key. Ids compare as strings:
/// they are 24 lowercase hex digits, which every collation orders alike.
const KEY_PREFIX: &str = r#"
local ns, collection, kind, key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local epoch = redis.call('GET', ns .. ':epoch') or '0'
local base = ns .. ':' .. epoch .. ':' .. collection
local generation = redis.call('GET', base .. ':gen') or '0'
local doc_key = base .. ':doc:' .. key
"#;

/// What pages and inserts need beside it: the collection's other counters
/// and the page's keys. A document lookup reads only the tail of these
/// (see [`LOOKUP_DOC`]), so a cached get-by-id costs Redis five reads, not
/// eight.
const PAGE_COUNTERS: &str = r#"
local tail = redis.call('GET', base .. ':tail') or '0'
local top = redis.call('GET', base .. ':top')
local below = redis.call('GET', base .. ':below') or '0'
local ceiling = redis.call('GET', base .. ':ceiling')
local full_key = base .. ':page:' .. generation .. ':' .. key
local last_key = base .. ':lastpage:' .. generation .. ':' .. tail .. ':' .. key
"#;

/// ARGV[5]: the time left to live (ms) under which an entry is stale, its
/// TTL being past. A document's fill needs only the generation unmoved,
/// but the counters seen also key the reads in flight that later readers
/// follow: with the tail in them, a reader that looks after an insert of
/// this id does not follow a read that began before it (and found nothing).
/// The count below the top and the top move only with the tail, or with a
/// page's fill, which changes no document; they are left out (`<gen>:<tail>::`).
const LOOKUP_DOC: &str = r#"
local tail = redis.call('GET', base .. ':tail') or '0'
local value = redis.call('GET', doc_key)
local stale = 0
if value and redis.call('PTTL', doc_key) < tonumber(ARGV[5]) then stale = 1 end
return {generation .. ':' .. tail .. '::', value, stale}
"#;

/// A full page is stored as `<below> <last>\n<page>`: the inserts below the
/// top counted when it was filled, and its last id. ARGV[5]: the time left
/// to live (ms) under which an entry is stale, its TTL being past.
const LOOKUP_PAGE: &str = r#"
local value, found = false, false
local stored = redis.call('GET', full_key)
if stored then
  local page_below, page_last, page = string.match(stored, '^([^ ]*) ([^\n]*)\n(.*)$')
  if page and (page_below == below or not ceiling or page_last < ceiling) then value, found = page, full_key end
else
  value, found = redis.call('GET', last_key), last_key
end
local stale = 0
if value and redis.call('PTTL', found) < tonumber(ARGV[5]) then stale = 1 end
return {generation .. ':' .. tail .. ':' .. below .. ':' .. (top or ''), value, stale}
"#;

/// ARGV[5]: the counters seen, ARGV[6]: the value, ARGV[7]: how long it is
/// kept (ms),
/// ARGV[8]: for a page, the id that becomes the top if it is above it.
/// The rules of `cache::memory::Counters::admit`: a full page survives a
/// tail move when it ends at or below the top seen, and inserts below the
/// top since its lookup when it ends below the ceiling.
const FILL_HEAD: &str = r#"
local seen_generation, seen_tail, seen_below, seen_top = string.match(ARGV[5], '^([^:]*):([^:]*):([^:]*):(.*)$')
if generation ~= seen_generation then return 0 end
if kind == 'doc' then
  redis.call('SET', doc_key, ARGV[6], 'PX', ARGV[7])
  return 1
end
"#;

/// The rest of [`FILL_HEAD`], for pages.
const FILL_PAGE: &str = r#"
if kind == 'full' then
  if seen_below ~= below and ceiling and ARGV[8] >= ceiling then return 0 end
  if tail ~= seen_tail and not (seen_top ~= '' and ARGV[8] <= seen_top) then return 0 end
elseif tail ~= seen_tail then return 0 end
if not top or ARGV[8] > top then redis.call('SET', base .. ':top', ARGV[8]) end
if kind == 'full' then redis.call('SET', full_key, below .. ' ' .. ARGV[8] .. '\n' .. ARGV[6], 'PX', ARGV[7])
else redis.call('SET', last_key, ARGV[6], 'PX', ARGV[7]) end
return 1
"#;

const INVALIDATE: &str = r#"
redis.call('INCR', base .. ':gen')
redis.call('DEL', base .. ':ceiling')
redis.call('DEL', doc_key)
return 1
"#;

/// `key` is the inserted id.
const INSERTED: &str = r#"
if top and key > top then redis.call('INCR', base .. ':tail')
elseif top then
  redis.call('INCR', base .. ':tail')
  redis.call('INCR', base .. ':below')
  if not ceiling or key < ceiling then redis.call('SET', base .. ':ceiling', key) end
else
  redis.call('INCR', base .. ':gen')
  redis.call('DEL', base .. ':ceiling')
end
if not top or key > top then redis.call('SET', base .. ':top', key) end
redis.call('DEL', doc_key)
return 1
"#;

pub struct RedisCache {
    connection: ConnectionManager,
    namespace: String,
    ttl: Duration,
    lookup_doc: Script,
    lookup_page: Script,
    fill: Script,
    invalidate: Script,
    inserted: Script,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(error: redis::RedisError) -> CacheError {
    CacheError(format!("redis: {error}"))
}

impl RedisCache {
    /// Connects with a connection manager, which reconnects by itself
    /// after Redis restarts; commands fail fast while it is down.
    pub async fn connect(url: &str, namespace: &str, ttl: Duration) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("the Redis URL (--redis-url / ORDERS_REDIS_URL) is invalid: {e}"))?;
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
            lookup_doc: Script::new(&format!("{KEY_PREFIX}{LOOKUP_DOC}")),
            lookup_page: Script::new(&format!("{KEY_PREFIX}{PAGE_COUNTERS}{LOOKUP_PAGE}")),
            fill: Script::new(&format!("{KEY_PREFIX}{FILL_HEAD}{PAGE_COUNTERS}{FILL_PAGE}")),
            invalidate: Script::new(&format!("{KEY_PREFIX}{INVALIDATE}")),
            inserted: Script::new(&format!("{KEY_PREFIX}{PAGE_COUNTERS}{INSERTED}")),
        })
    }
}

impl RedisCache {
    /// The shared connection, for the job queue on the same Redis.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Runs a write's script for document `id`.
    async fn run_on_document(&self, script: &Script, collection: &str, id: &str) -> CacheResult<()> {
        let mut connection = self.connection.clone();
        let _: RedisValue =
            script.arg(&self.namespace).arg(collection).arg("doc").arg(id).invoke_async(&mut connection).await.map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn lookup(&self, collection: &str, kind: EntryKind, key: &str) -> CacheResult<Lookup> {
        let mut connection = self.connection.clone();
        let script = match kind {
            EntryKind::Doc => &self.lookup_doc,
            EntryKind::Page => &self.lookup_page,
        };
        let (generation, value, stale): (String, Option<String>, i64) = script
            .arg(&self.namespace)
            .arg(collection)
            .arg(kind.as_str())
            .arg(key)
            .arg(millis(kept_for(self.ttl) - self.ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(Lookup { value, stale: stale == 1, generation: Generation(generation) })
    }

    async fn fill(&self, collection: &str, entry: &Entry, key: &str, seen: &Generation, value: &str) -> CacheResult<()> {
        let (kind, bound) = match entry {
            Entry::Doc => ("doc", ""),
            Entry::FullPage { last } => ("full", last.as_str()),
            Entry::LastPage { top } => ("last", top.as_str()),
        };
        let mut connection = self.connection.clone();
        let _: RedisValue = self
            .fill
            .arg(&self.namespace)
            .arg(collection)
            .arg(kind)
            .arg(key)
            .arg(&seen.0)
            .arg(value)
            .arg(millis(kept_for(self.ttl)))
            .arg(bound)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn invalidate(&self, collection: &str, id: &str) -> CacheResult<()> {
        self.run_on_document(&self.invalidate, collection, id).await
    }

    async fn inserted(&self, collection: &str, id: &str) -> CacheResult<()> {
        self.run_on_document(&self.inserted, collection, id).await
    }

    async fn reset(&self) -> CacheResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("INCR").arg(format!("{}:epoch", self.namespace)).query_async::<i64>(&mut connection).await.map(drop).map_err(unavailable)
    }

    async fn ping(&self) -> CacheResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.map(drop).map_err(unavailable)
    }
}
