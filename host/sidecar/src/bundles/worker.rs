//! One worker's loop, and the steps of one bundle job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::fetch::{FetchFailure, body_failure};
use super::{LOG, Pipeline, STREAM, archive};
use crate::blobs::valid_key;
use crate::queue::Job;

/// Deliveries after which a job that keeps failing for infrastructure
/// reasons (not its URLs) is given up, so it cannot circle forever.
const MAX_DELIVERIES: u64 = 5;
/// Attempts per URL when the failure is worth retrying.
const ATTEMPTS: u32 = 3;
/// Progress events per URL are at least this far apart.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
const POLL_EVERY: Duration = Duration::from_millis(250);

/// A step that could not be recorded (the event log or disk failed): the job
/// is left unacknowledged and runs again later.
#[derive(Debug)]
struct Interrupted(String);

impl<E: std::fmt::Display> From<E> for Interrupted {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

struct BundleJob {
    id: String,
    urls: Vec<String>,
}

fn parse_job(job: &Job) -> Option<BundleJob> {
    let id = job.payload.get("bundle")?.as_str()?.to_owned();
    let urls = job.payload.get("urls")?.as_array()?.iter().map(|u| u.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()?;
    (valid_key(&id) && !urls.is_empty()).then_some(BundleJob { id, urls })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Bytes taken from the bundle's budget by one download, given back unless
/// the download is kept (also when it is cancelled by its timeout).
struct Reservation<'a> {
    budget: &'a AtomicU64,
    bytes: u64,
}

impl Reservation<'_> {
    fn grow(&mut self, bytes: u64, limit: u64) -> bool {
        let before = self.budget.fetch_add(bytes, Ordering::SeqCst);
        self.bytes += bytes;
        before + bytes <= limit
    }

    fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

impl Pipeline {
    pub(super) async fn work(self: Arc<Self>, consumer: String) {
        let min_idle = self.settings.claim_timeout.as_millis() as u64;
        loop {
            match self.queue.claim(STREAM, &consumer, 1, min_idle).await {
                Ok(jobs) if jobs.is_empty() => tokio::time::sleep(POLL_EVERY).await,
                Ok(jobs) => {
                    for job in jobs {
                        self.run(&consumer, job).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(target: "bundles", %error, "cannot claim bundle jobs; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn run(self: &Arc<Self>, consumer: &str, job: Job) {
        let started = Instant::now();
        let heartbeat = {
            let (pipeline, consumer, ids) = (self.clone(), consumer.to_owned(), vec![job.id.clone()]);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(pipeline.settings.claim_timeout / 3).await;
                    if let Err(error) = pipeline.queue.touch(STREAM, &consumer, &ids).await {
                        tracing::warn!(target: "bundles", %error, "cannot renew the claim on a bundle job");
                    }
                }
            })
        };
        let outcome = match parse_job(&job) {
            Some(bundle) => self.process(&bundle, job.deliveries).await,
            None => {
                tracing::error!(target: "bundles", job = %job.id, payload = %job.payload, "dropping a malformed bundle job");
                Ok("malformed")
            }
        };
        heartbeat.abort();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(Interrupted(reason)) if job.deliveries < MAX_DELIVERIES => {
                tracing::warn!(target: "bundles", job = %job.id, deliveries = job.deliveries, %reason, "bundle job interrupted; it will run again");
                self.metrics.bundle_job("interrupted", started.elapsed());
                return;
            }
            Err(Interrupted(reason)) => {
                if let Some(bundle) = parse_job(&job) {
                    let data = json!({ "error": "gave_up", "message": format!("gave up after {} attempts: {reason}", job.deliveries) });
                    let _ = self.events.append(LOG, &bundle.id, "failed", &data, self.settings.events_ttl()).await;
                }
                "gave_up"
            }
        };
        if let Err(error) = self.queue.ack(STREAM, std::slice::from_ref(&job.id)).await {
            tracing::warn!(target: "bundles", job = %job.id, %error, "cannot acknowledge a finished bundle job; it may run again");
        }
        self.metrics.bundle_job(outcome, started.elapsed());
        tracing::info!(target: "bundles", job = %job.id, outcome, millis = started.elapsed().as_millis() as u64, "bundle job done");
    }

    async fn emit(&self, bundle: &str, event: &str, data: Value) -> Result<(), Interrupted> {
        self.events.append(LOG, bundle, event, &data, self.settings.events_ttl()).await?;
        Ok(())
    }

    /// Progress is advisory: losing one event loses nothing the next won't say.
    async fn emit_progress(&self, bundle: &str, event: &str, data: Value) {
        if let Err(error) = self.emit(bundle, event, data).await {
            tracing::debug!(target: "bundles", bundle, error = error.0, "progress event lost");
        }
    }

    async fn process(&self, bundle: &BundleJob, deliveries: u64) -> Result<&'static str, Interrupted> {
        let history = self.events.read(LOG, &bundle.id, None, 100_000).await?;
        if history.iter().any(|e| e.event == "ready" || e.event == "failed") {
            return Ok("duplicate");
        }
        self.emit(&bundle.id, "started", json!({ "attempt": deliveries })).await?;
        let dir = self.work_root.join(&bundle.id);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
        tokio::fs::create_dir_all(&dir).await?;

        let names = archive::entry_names(&bundle.urls);
        let budget = AtomicU64::new(0);
        let downloads: Vec<Result<Option<PathBuf>, Interrupted>> = futures::stream::iter(bundle.urls.iter().cloned().enumerate())
            .map(|(index, url)| self.download(&bundle.id, index, url, &names[index], &dir, &budget))
            .buffered(self.settings.downloads_per_job.max(1))
            .collect()
            .await;
        let mut entries = Vec::new();
        for (name, download) in names.into_iter().zip(downloads) {
            if let Some(path) = download? {
                entries.push((name, path));
            }
        }
        if entries.is_empty() {
            let message = format!("none of the {} URLs could be downloaded", bundle.urls.len());
            self.emit(&bundle.id, "failed", json!({ "error": "nothing_downloaded", "message": message })).await?;
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Ok("failed");
        }

        let zip_path = dir.join("bundle.zip");
        let bytes = self.compress(&bundle.id, entries.clone(), zip_path.clone()).await?;
        let key = format!("bundle-{}.zip", bundle.id);
        self.blobs.put_file(&key, &zip_path).await?;
        let expires = unix_now() + self.settings.link_ttl.as_secs();
        let link = orders_signed_link::sign(&format!("/downloads/{key}"), expires, &self.settings.secret);
        self.emit(&bundle.id, "ready", json!({ "link": link, "expires_at": rfc3339(expires), "files": entries.len(), "bytes": bytes }))
            .await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok("ready")
    }

    async fn compress(&self, bundle: &str, entries: Vec<(String, PathBuf)>, out: PathBuf) -> Result<u64, Interrupted> {
        let events = self.events.clone();
        let ttl = self.settings.events_ttl();
        let bundle = bundle.to_owned();
        let runtime = tokio::runtime::Handle::current();
        let written = tokio::task::spawn_blocking(move || {
            let mut last: Option<Instant> = None;
            archive::write_zip(&entries, &out, |percent| {
                if percent == 100 || last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                    last = Some(Instant::now());
                    let _ = runtime.block_on(events.append(LOG, &bundle, "compress", &json!({ "percent": percent }), ttl));
                }
            })
        })
        .await??;
        Ok(written)
    }

    /// One URL, with retries; `Ok(None)` when it failed (the event says why).
    async fn download(&self, bundle: &str, index: usize, url: String, name: &str, dir: &Path, budget: &AtomicU64) -> Result<Option<PathBuf>, Interrupted> {
        let path = dir.join(format!("{index}.part"));
        let mut attempt = 1;
        loop {
            let timeout = self.settings.fetch_timeout;
            let outcome = tokio::time::timeout(timeout, self.fetch_to_file(bundle, index, &url, &path, budget))
                .await
                .unwrap_or_else(|_| Err(FetchFailure::new("timeout", format!("not complete within {} s", timeout.as_secs_f64()))));
            match outcome {
                Ok(bytes) => {
                    self.metrics.bundle_download("ok");
                    self.emit(bundle, "downloaded", json!({ "index": index, "name": name, "bytes": bytes })).await?;
                    return Ok(Some(path));
                }
                Err(failure) if failure.transient && attempt < ATTEMPTS => {
                    tracing::info!(target: "bundles", bundle, index, attempt, error = %failure.message, "retrying a download");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(failure) => {
                    self.metrics.bundle_download(failure.code);
                    let _ = tokio::fs::remove_file(&path).await;
                    let data = json!({ "index": index, "error": failure.code, "message": failure.message });
                    self.emit(bundle, "download_failed", data).await?;
                    return Ok(None);
                }
            }
        }
    }

    async fn fetch_to_file(&self, bundle: &str, index: usize, url: &str, path: &Path, budget: &AtomicU64) -> Result<u64, FetchFailure> {
        let (max_file, max_bundle) = (self.settings.max_file_bytes, self.settings.max_bundle_bytes);
        let too_large = || FetchFailure::new("too_large", format!("larger than the per-file limit of {}", human(max_file)));
        let mut response = self.fetcher.open(url).await?;
        let total = response.content_length();
        if total.is_some_and(|t| t > max_file) {
            return Err(too_large());
        }
        let disk = |e: std::io::Error| FetchFailure::new("storage", format!("cannot write the file: {e}"));
        let mut file = tokio::fs::File::create(path).await.map_err(disk)?;
        let mut reservation = Reservation { budget, bytes: 0 };
        let mut received = 0u64;
        let mut last_progress = Instant::now();
        self.emit_progress(bundle, "progress", json!({ "index": index, "received": 0, "total": total })).await;
        while let Some(chunk) = response.chunk().await.map_err(|e| body_failure(url, e))? {
            received += chunk.len() as u64;
            if received > max_file {
                return Err(too_large());
            }
            if !reservation.grow(chunk.len() as u64, max_bundle) {
                return Err(FetchFailure::new("bundle_too_large", format!("the bundle would exceed its limit of {}", human(max_bundle))));
            }
            file.write_all(&chunk).await.map_err(disk)?;
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                self.emit_progress(bundle, "progress", json!({ "index": index, "received": received, "total": total })).await;
            }
        }
        file.flush().await.map_err(disk)?;
        reservation.keep();
        Ok(received)
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_give_back_what_they_do_not_keep() {
        let budget = AtomicU64::new(0);
        let mut kept = Reservation { budget: &budget, bytes: 0 };
        assert!(kept.grow(60, 100));
        kept.keep();
        {
            let mut dropped = Reservation { budget: &budget, bytes: 0 };
            assert!(dropped.grow(40, 100));
            assert!(!dropped.grow(1, 100), "over the limit");
        }
        assert_eq!(budget.load(Ordering::SeqCst), 60);
    }

    #[test]
    fn jobs_are_parsed_strictly() {
        let job = |payload: Value| Job { id: "1".into(), payload, deliveries: 1 };
        assert!(parse_job(&job(json!({ "bundle": "abc", "urls": ["http://a/"] }))).is_some());
        assert!(parse_job(&job(json!({ "bundle": "../x", "urls": ["http://a/"] }))).is_none());
        assert!(parse_job(&job(json!({ "bundle": "abc", "urls": [] }))).is_none());
        assert!(parse_job(&job(json!({ "bundle": "abc", "urls": [1] }))).is_none());
    }
}
