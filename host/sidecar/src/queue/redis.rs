//! Redis Streams with one consumer group per stream: XADD to append,
//! XAUTOCLAIM to take over jobs idle past `min_idle` (their consumer died),
//! XREADGROUP for new ones, XACK + XDEL when done. The steps that must be
//! decided with what they change (a bounded append, a fenced renewal, an
//! acknowledgement that releases a key's share) are Lua scripts, which
//! Redis runs atomically.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, Script, Value as RedisValue};
use serde_json::Value;

use super::{AppendLimits, AppendOutcome, Job, JobQueue, QueueError, QueueResult};

const GROUP: &str = "workers";

/// KEYS: stream, per-key counts. ARGV: payload, max queued, limit key ("" for none), max per key.
static APPEND_WITHIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return {'stream_full'} end
if ARGV[3] ~= '' and tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0') >= tonumber(ARGV[4]) then return {'key_full'} end
local id = redis.call('XADD', KEYS[1], '*', 'payload', ARGV[1], 'limit_key', ARGV[3])
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[3], 1) end
return {'added', id}
",
    )
});

/// KEYS: stream. ARGV: group, consumer, id, deliveries. Renews the claim
/// only if this very claim still holds the job: XCLAIM alone would take it
/// back from the worker that took it over.
static TOUCH_FENCED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 then return 0 end
if pending[1][2] ~= ARGV[2] or tonumber(pending[1][4]) ~= tonumber(ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
",
    )
});

/// KEYS: stream, per-key counts. ARGV: group, ids... Returns how many were pending.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local acked = 0
for i = 2, #ARGV do
  local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  if #entry > 0 and redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    local fields = entry[1][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'limit_key' and fields[j + 1] ~= '' then
        if redis.call('HINCRBY', KEYS[2], fields[j + 1], -1) <= 0 then redis.call('HDEL', KEYS[2], fields[j + 1]) end
      end
    end
  end
end
return acked
",
    )
});

pub struct RedisQueue {
    connection: ConnectionManager,
    namespace: String,
}

pub(crate) fn failed(error: redis::RedisError) -> QueueError {
    QueueError(format!("redis: {error}"))
}

impl RedisQueue {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self {
            connection,
            namespace: namespace.to_owned(),
        }
    }

    fn key(&self, stream: &str) -> String {
        format!("{}:stream:{stream}", self.namespace)
    }

    /// How many unacknowledged jobs each limit key holds.
    fn counts_key(&self, stream: &str) -> String {
        format!("{}:stream-keys:{stream}", self.namespace)
    }

    async fn ensure_group(&self, key: &str) -> QueueResult<()> {
        let mut connection = self.connection.clone();
        let created: Result<(), redis::RedisError> =
            connection.xgroup_create_mkstream(key, GROUP, "0").await;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => Err(failed(error)),
            _ => Ok(()),
        }
    }

    async fn deliveries(&self, key: &str, id: &str) -> u64 {
        let mut connection = self.connection.clone();
        let pending: Result<RedisValue, _> = redis::cmd("XPENDING")
            .arg(key)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut connection)
            .await;
        // Reply: [[id, consumer, idle, deliveries]]
        if let Ok(RedisValue::Array(entries)) = pending
            && let Some(RedisValue::Array(fields)) = entries.first()
            && let Some(RedisValue::Int(count)) = fields.get(3)
        {
            return *count as u64;
        }
        1
    }
}

fn payload_of(map: &std::collections::HashMap<String, RedisValue>) -> Value {
    match map.get("payload") {
        Some(RedisValue::BulkString(bytes)) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn append(&self, stream: &str, payload: &Value) -> QueueResult<String> {
        let key = self.key(stream);
        self.ensure_group(&key).await?;
        let mut connection = self.connection.clone();
        connection
            .xadd(&key, "*", &[("payload", payload.to_string())])
            .await
            .map_err(failed)
    }

    async fn append_within(
        &self,
        stream: &str,
        payload: &Value,
        limits: &AppendLimits<'_>,
    ) -> QueueResult<AppendOutcome> {
        let key = self.key(stream);
        self.ensure_group(&key).await?;
        let (limit_key, max_per_key) = limits.per_key.unwrap_or(("", 0));
        let mut connection = self.connection.clone();
        let reply: Vec<String> = APPEND_WITHIN
            .key(&key)
            .key(self.counts_key(stream))
            .arg(payload.to_string())
            .arg(limits.max_queued)
            .arg(limit_key)
            .arg(max_per_key)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        match reply.as_slice() {
            [added, id] if added == "added" => Ok(AppendOutcome::Added(id.clone())),
            [full] if full == "stream_full" => Ok(AppendOutcome::StreamFull),
            [full] if full == "key_full" => Ok(AppendOutcome::KeyFull),
            other => Err(QueueError(format!(
                "redis: unexpected reply to a bounded append: {other:?}"
            ))),
        }
    }

    async fn claim(
        &self,
        stream: &str,
        consumer: &str,
        count: usize,
        min_idle_ms: u64,
    ) -> QueueResult<Vec<Job>> {
        let key = self.key(stream);
        self.ensure_group(&key).await?;
        let mut connection = self.connection.clone();
        let mut jobs = Vec::new();
        let reclaimed: StreamAutoClaimReply = connection
            .xautoclaim_options(
                &key,
                GROUP,
                consumer,
                min_idle_ms,
                "0-0",
                StreamAutoClaimOptions::default().count(count),
            )
            .await
            .map_err(failed)?;
        for entry in reclaimed.claimed {
            let deliveries = self.deliveries(&key, &entry.id).await;
            jobs.push(Job {
                payload: payload_of(&entry.map),
                id: entry.id,
                deliveries,
            });
        }
        if jobs.len() < count {
            let options = StreamReadOptions::default()
                .group(GROUP, consumer)
                .count(count - jobs.len());
            let fresh: StreamReadReply = connection
                .xread_options(&[&key], &[">"], &options)
                .await
                .map_err(failed)?;
            for stream_key in fresh.keys {
                for entry in stream_key.ids {
                    jobs.push(Job {
                        payload: payload_of(&entry.map),
                        id: entry.id,
                        deliveries: 1,
                    });
                }
            }
        }
        Ok(jobs)
    }

    async fn touch(&self, stream: &str, consumer: &str, job: &Job) -> QueueResult<bool> {
        let mut connection = self.connection.clone();
        let renewed: i64 = TOUCH_FENCED
            .key(self.key(stream))
            .arg(GROUP)
            .arg(consumer)
            .arg(&job.id)
            .arg(job.deliveries)
            .invoke_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(renewed == 1)
    }

    async fn ack(&self, stream: &str, ids: &[String]) -> QueueResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut connection = self.connection.clone();
        let mut invocation = ACK.key(self.key(stream));
        invocation.key(self.counts_key(stream)).arg(GROUP);
        for id in ids {
            invocation.arg(id);
        }
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(failed)
    }

    async fn depth(&self, stream: &str) -> QueueResult<u64> {
        let mut connection = self.connection.clone();
        connection.xlen(self.key(stream)).await.map_err(failed)
    }
}
