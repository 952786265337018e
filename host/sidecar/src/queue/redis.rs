//! Redis Streams with one consumer group per stream: XADD to append,
//! XAUTOCLAIM to take over jobs idle past `min_idle` (their consumer died),
//! XREADGROUP for new ones, XACK + XDEL when done.

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value as RedisValue};
use serde_json::Value;

use super::{Job, JobQueue, QueueError, QueueResult};

const GROUP: &str = "workers";

pub struct RedisQueue {
    connection: ConnectionManager,
    namespace: String,
}

pub(crate) fn failed(error: redis::RedisError) -> QueueError {
    QueueError(format!("redis: {error}"))
}

impl RedisQueue {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self { connection, namespace: namespace.to_owned() }
    }

    fn key(&self, stream: &str) -> String {
        format!("{}:stream:{stream}", self.namespace)
    }

    async fn ensure_group(&self, key: &str) -> QueueResult<()> {
        let mut connection = self.connection.clone();
        let created: Result<(), redis::RedisError> = connection.xgroup_create_mkstream(key, GROUP, "0").await;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => Err(failed(error)),
            _ => Ok(()),
        }
    }

    async fn deliveries(&self, key: &str, id: &str) -> u64 {
        let mut connection = self.connection.clone();
        let pending: Result<RedisValue, _> = redis::cmd("XPENDING").arg(key).arg(GROUP).arg(id).arg(id).arg(1).query_async(&mut connection).await;
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
        connection.xadd(&key, "*", &[("payload", payload.to_string())]).await.map_err(failed)
    }

    async fn claim(&self, stream: &str, consumer: &str, count: usize, min_idle_ms: u64) -> QueueResult<Vec<Job>> {
        let key = self.key(stream);
        self.ensure_group(&key).await?;
        let mut connection = self.connection.clone();
        let mut jobs = Vec::new();
        let reclaimed: StreamAutoClaimReply = connection
            .xautoclaim_options(&key, GROUP, consumer, min_idle_ms, "0-0", StreamAutoClaimOptions::default().count(count))
            .await
            .map_err(failed)?;
        for entry in reclaimed.claimed {
            let deliveries = self.deliveries(&key, &entry.id).await;
            jobs.push(Job { payload: payload_of(&entry.map), id: entry.id, deliveries });
        }
        if jobs.len() < count {
            let options = StreamReadOptions::default().group(GROUP, consumer).count(count - jobs.len());
            let fresh: StreamReadReply = connection.xread_options(&[&key], &[">"], &options).await.map_err(failed)?;
            for stream_key in fresh.keys {
                for entry in stream_key.ids {
                    jobs.push(Job { payload: payload_of(&entry.map), id: entry.id, deliveries: 1 });
                }
            }
        }
        Ok(jobs)
    }

    async fn touch(&self, stream: &str, consumer: &str, ids: &[String]) -> QueueResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // XCLAIM to ourselves resets the idle time; JUSTID leaves the count of deliveries alone.
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("XCLAIM");
        command.arg(self.key(stream)).arg(GROUP).arg(consumer).arg(0).arg(ids).arg("JUSTID");
        let _: RedisValue = command.query_async(&mut connection).await.map_err(failed)?;
        Ok(())
    }

    async fn ack(&self, stream: &str, ids: &[String]) -> QueueResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let key = self.key(stream);
        let mut connection = self.connection.clone();
        let acked: u64 = connection.xack(&key, GROUP, ids).await.map_err(failed)?;
        let _: u64 = connection.xdel(&key, ids).await.map_err(failed)?;
        Ok(acked)
    }

    async fn depth(&self, stream: &str) -> QueueResult<u64> {
        let mut connection = self.connection.clone();
        connection.xlen(self.key(stream)).await.map_err(failed)
    }
}
