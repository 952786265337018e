//! Event logs as one Redis Stream per key (XADD / XRANGE with an exclusive
//! start), marks as `SET NX EX`. Both expire in Redis itself.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use serde_json::Value;

use super::{BadEventId, Event, EventLog, EventsResult};
use crate::queue::redis::failed;

pub struct RedisEvents {
    connection: ConnectionManager,
    namespace: String,
}

/// Redis stream ids: `<ms>-<seq>`.
fn valid_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty() && !seq.is_empty() && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    })
}

impl RedisEvents {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self { connection, namespace: namespace.to_owned() }
    }

    fn key(&self, log: &str, key: &str) -> String {
        format!("{}:events:{log}:{key}", self.namespace)
    }
}

#[async_trait]
impl EventLog for RedisEvents {
    async fn append(&self, log: &str, key: &str, event: &str, data: &Value, ttl: Duration) -> EventsResult<String> {
        let key = self.key(log, key);
        let mut connection = self.connection.clone();
        let (id, _): (String, bool) = redis::pipe()
            .atomic()
            .xadd(&key, "*", &[("event", event.to_owned()), ("data", data.to_string())])
            .expire(&key, ttl.as_secs().max(1) as i64)
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(id)
    }

    async fn read(&self, log: &str, key: &str, after: Option<&str>, limit: usize) -> EventsResult<Vec<Event>> {
        let start = match after {
            Some(id) if valid_id(id) => format!("({id}"),
            Some(id) => return Err(BadEventId(id.to_owned()).into()),
            None => "-".to_owned(),
        };
        let mut connection = self.connection.clone();
        let reply: StreamRangeReply =
            connection.xrange_count(self.key(log, key), start, "+", limit).await.map_err(failed)?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| {
                let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
                Event { event: text("event"), data: serde_json::from_str(&text("data")).unwrap_or(Value::Null), id: entry.id }
            })
            .collect())
    }

    async fn mark_once(&self, key: &str, ttl: Duration) -> EventsResult<bool> {
        let mut connection = self.connection.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(format!("{}:mark:{key}", self.namespace))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(taken.is_some())
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
