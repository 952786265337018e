//! Drives the bundle API as a client would: submit URLs, follow the
//! Server-Sent Events to the end, download the zip.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

pub struct BundleClient {
    pub base: String,
    pub client: reqwest::Client,
}

impl BundleClient {
    /// A client that sends `key` (a key with the `bundles` scope) with every request.
    pub fn new(base: &str, key: Option<&str>) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), client: crate::contract::client_with_key(key, None) }
    }

    /// `POST /bundles`; the answer's status and body.
    pub async fn submit(&self, body: Value) -> Result<(u16, Value)> {
        let response = self.client.post(format!("{}/bundles", self.base)).json(&body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.context("JSON answer to POST /bundles")?))
    }

    /// Submits `urls` and returns the bundle id (202 required).
    pub async fn create(&self, urls: &[String]) -> Result<String> {
        let (status, body) = self.submit(json!({ "urls": urls })).await?;
        if status != 202 {
            bail!("POST /bundles answered {status}: {body}");
        }
        Ok(body["id"].as_str().context("id")?.to_owned())
    }

    pub async fn state(&self, id: &str) -> Result<Value> {
        Ok(self.client.get(format!("{}/bundles/{id}", self.base)).send().await?.error_for_status()?.json().await?)
    }

    /// Reads the event stream (from `last_event_id` when given) until a
    /// `ready` or `failed` event, or until `stop` says so, or `limit` passes.
    pub async fn follow(
        &self,
        id: &str,
        last_event_id: Option<&str>,
        limit: Duration,
        mut stop: impl FnMut(&SseEvent) -> bool,
    ) -> Result<Vec<SseEvent>> {
        let mut request = self.client.get(format!("{}/bundles/{id}/events", self.base));
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await?;
        if response.status() != 200 {
            bail!("events answered {}: {}", response.status(), response.text().await.unwrap_or_default());
        }
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        if !content_type.starts_with("text/event-stream") {
            bail!("events answered content-type {content_type:?}");
        }
        let deadline = Instant::now() + limit;
        let mut response = response;
        let mut buffer = String::new();
        let mut events = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let chunk = match tokio::time::timeout(remaining, response.chunk()).await {
                Err(_) => bail!("no end of bundle {id} within {limit:?}; events so far: {:?}", names(&events)),
                Ok(chunk) => match chunk? {
                    None => return Ok(events),
                    Some(chunk) => chunk,
                },
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block) {
                    let done = stop(&event) || matches!(event.event.as_str(), "ready" | "failed");
                    events.push(event);
                    if done {
                        return Ok(events);
                    }
                }
            }
        }
    }

    pub async fn get(&self, path_and_query: &str) -> Result<reqwest::Response> {
        Ok(self.client.get(format!("{}{path_and_query}", self.base)).send().await?)
    }
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("event:") {
            event = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    Some(SseEvent { id, event: event?, data: serde_json::from_str(&data).unwrap_or(Value::Null) })
}

/// The entries of a zip: name and bytes.
pub fn zip_entries(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let mut file = archive.by_index(index)?;
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut content)?;
        entries.push((file.name()?.into_owned(), content));
    }
    Ok(entries)
}
