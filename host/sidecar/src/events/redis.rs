//! Event logs as one Redis Stream per key (XADD / XRANGE with an exclusive
//! start), marks as `SET NX EX`. Both expire in Redis itself.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::Script;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use serde_json::Value;

use super::{BadEventId, Event, EventLog, EventsResult, Reservation};
use crate::queue::redis::failed;

// A mark's value says its state and holder: `r:<holder>` reserved,
// `s:<holder>` spent (anything else, e.g. the first release's `1`, is spent).

/// KEYS: mark. ARGV: holder, lease in ms.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local value = redis.call('GET', KEYS[1])
if not value then redis.call('SET', KEYS[1], 'r:' .. ARGV[1], 'PX', ARGV[2]) return 'granted' end
if value == 'r:' .. ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 'granted' end
if value == 's:' .. ARGV[1] then return 'granted' end
if string.sub(value, 1, 2) == 'r:' then return 'busy' end
return 'spent'
",
    )
});

/// KEYS: mark. ARGV: holder, ttl in ms.
static SPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local value = redis.call('GET', KEYS[1])
if value == 'r:' .. ARGV[1] or value == 's:' .. ARGV[1] then redis.call('SET', KEYS[1], 's:' .. ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
",
    )
});

/// KEYS: mark. ARGV: holder.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == 'r:' .. ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
",
    )
});

pub struct RedisEvents {
    connection: ConnectionManager,
    namespace: String,
}

/// Redis stream ids: `<ms>-<seq>`.
fn valid_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    })
}

impl RedisEvents {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self {
            connection,
            namespace: namespace.to_owned(),
        }
    }

    fn key(&self, log: &str, key: &str) -> String {
        format!("{}:events:{log}:{key}", self.namespace)
    }

    fn mark(&self, key: &str) -> String {
        format!("{}:mark:{key}", self.namespace)
    }
}

#[async_trait]
impl EventLog for RedisEvents {
    async fn append(
        &self,
        log: &str,
        key: &str,
        event: &str,
        data: &Value,
        ttl: Duration,
    ) -> EventsResult<String> {
        let key = self.key(log, key);
        let mut connection = self.connection.clone();
        let (id, _): (String, bool) = redis::pipe()
            .atomic()
            .xadd(
                &key,
                "*",
                &[("event", event.to_owned()), ("data", data.to_string())],
            )
            .expire(&key, ttl.as_secs().max(1) as i64)
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(id)
    }

    async fn read(
        &self,
        log: &str,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> EventsResult<Vec<Event>> {
        let start = match after {
            Some(id) if valid_id(id) => format!("({id}"),
            Some(id) => return Err(BadEventId(id.to_owned()).into()),
            None => "-".to_owned(),
        };
        let mut connection = self.connection.clone();
        let reply: StreamRangeReply = connection
            .xrange_count(self.key(log, key), start, "+", limit)
            .await
            .map_err(failed)?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| {
                let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
                Event {
                    event: text("event"),
                    data: serde_json::from_str(&text("data")).unwrap_or(Value::Null),
                    id: entry.id,
                }
            })
            .collect())
    }

    async fn mark_once(&self, key: &str, ttl: Duration) -> EventsResult<bool> {
        let mut connection = self.connection.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.mark(key))
            .arg("s:")
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(taken.is_some())
    }

    async fn reserve_mark(
        &self,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> EventsResult<Reservation> {
        let mut connection = self.connection.clone();
        let answer: String = RESERVE
            .key(self.mark(key))
            .arg(holder)
            .arg(lease.as_millis().max(1) as u64)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(match answer.as_str() {
            "granted" => Reservation::Granted,
            "busy" => Reservation::Busy,
            _ => Reservation::Spent,
        })
    }

    async fn spend_mark(&self, key: &str, holder: &str, ttl: Duration) -> EventsResult<bool> {
        let mut connection = self.connection.clone();
        let spent: i64 = SPEND
            .key(self.mark(key))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(spent == 1)
    }

    async fn release_mark(&self, key: &str, holder: &str) -> EventsResult<bool> {
        let mut connection = self.connection.clone();
        let released: i64 = RELEASE
            .key(self.mark(key))
            .arg(holder)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(released == 1)
    }

    async fn remove_expired(&self) -> EventsResult<u64> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids() {
        assert!(super::valid_id("1700000000000-0"));
        for bad in ["", "-", "1-", "-1", "1-a", "12", "1-2-3"] {
            assert!(!super::valid_id(bad), "{bad}");
        }
    }
}
