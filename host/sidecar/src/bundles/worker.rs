//! One worker's loop, and the steps of one bundle job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use orders_vocabulary::bundle::{BundleEvent, BundleJob, DOWNLOAD_PATH, zip_key};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::fetch::{FetchFailure, body_failure};
use super::progress::Progress;
use super::{LOG, Pipeline, STREAM, archive};
use crate::blobs::valid_key;
use crate::queue::Job;

/// Deliveries after which a job that keeps failing for infrastructure
/// reasons (not its URLs) is given up, so it cannot circle forever.
const MAX_DELIVERIES: u64 = 5;
/// Attempts per URL when the failure is worth retrying (and the bundle's
/// retry budget, `max_retries`, is not spent).
const ATTEMPTS: u32 = 3;
/// The minimum transfer rate is judged over windows this long, so one
/// slow moment of a healthy server is not mistaken for a drip.
const RATE_WINDOW: Duration = Duration::from_secs(5);
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

/// The job `POST /bundles` queued, if it names a bundle fit for a file
/// name and at least one URL.
fn parse_job(job: &Job) -> Option<BundleJob> {
    let bundle = BundleJob::deserialize(&job.payload).ok()?;
    (valid_key(&bundle.bundle) && !bundle.urls.is_empty()).then_some(bundle)
}

/// The work directory of one claim of a job: the claim's fencing token
/// (consumer and delivery count) is in the name, so a worker whose claim was
/// taken over and its successor never share files.
fn work_dir_name(bundle: &str, job: &Job, consumer: &str) -> String {
    format!("{bundle}.{}.{consumer}", job.deliveries)
}

/// Takes one retry from the bundle's budget; `false` once it is spent.
fn take_retry(budget: &AtomicU32) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

/// What bounds one attempt of a bundle as a whole.
struct Bounds<'a> {
    deadline: Instant,
    retries: &'a AtomicU32,
    budget: &'a AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
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
        let (lost, mut taken_over) = tokio::sync::watch::channel(false);
        let heartbeat = {
            let (pipeline, consumer, job) = (self.clone(), consumer.to_owned(), job.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(pipeline.settings.claim_timeout / 3).await;
                    match pipeline.queue.touch(STREAM, &consumer, &job).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(target: "bundles", job = %job.id, consumer, "the claim on a bundle job was taken over; this worker stops it");
                            let _ = lost.send(true);
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(target: "bundles", %error, "cannot renew the claim on a bundle job")
                        }
                    }
                }
            })
        };
        let outcome = match parse_job(&job) {
            Some(bundle) => {
                let dir = self
                    .work_root
                    .join(work_dir_name(&bundle.bundle, &job, consumer));
                let outcome = tokio::select! {
                    outcome = self.process(&bundle, job.deliveries, &dir) => Some(outcome),
                    _ = taken_over.wait_for(|lost| *lost) => None,
                };
                let _ = tokio::fs::remove_dir_all(&dir).await;
                outcome
            }
            None => {
                tracing::error!(target: "bundles", job = %job.id, payload = %job.payload, "dropping a malformed bundle job");
                Some(Ok("malformed"))
            }
        };
        heartbeat.abort();
        let outcome = match outcome {
            // The worker that holds the claim now finishes and acknowledges it.
            None => {
                self.metrics.bundle_job("taken_over", started.elapsed());
                return;
            }
            Some(Ok(outcome)) => outcome,
            Some(Err(Interrupted(reason))) if job.deliveries < MAX_DELIVERIES => {
                tracing::warn!(target: "bundles", job = %job.id, deliveries = job.deliveries, %reason, "bundle job interrupted; it will run again");
                self.metrics.bundle_job("interrupted", started.elapsed());
                return;
            }
            Some(Err(Interrupted(reason))) => {
                if let Some(bundle) = parse_job(&job) {
                    tracing::error!(target: "bundles", job = %job.id, %reason, "giving up a bundle job");
                    let message = format!("gave up after {} attempts", job.deliveries);
                    let _ = self.emit(&bundle.bundle, BundleEvent::Failed { error: "gave_up".into(), message }).await;
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

    /// Where one source of a bundle's progress goes (see `progress`).
    fn progress(&self, bundle: &str) -> Progress {
        Progress::new(self.events.clone(), self.settings.events_ttl(), bundle)
    }

    async fn emit(&self, bundle: &str, event: BundleEvent) -> Result<(), Interrupted> {
        let (name, data) = event.to_parts();
        self.events
            .append(LOG, bundle, &name, &data, self.settings.events_ttl())
            .await?;
        Ok(())
    }

    async fn process(
        &self,
        bundle: &BundleJob,
        deliveries: u64,
        dir: &Path,
    ) -> Result<&'static str, Interrupted> {
        let history = self.events.read(LOG, &bundle.bundle, None, 100_000).await?;
        if history
            .iter()
            .any(|e| BundleEvent::from_parts(&e.event, &e.data).is_ok_and(|event| event.ends_bundle()))
        {
            return Ok("duplicate");
        }
        self.emit(&bundle.bundle, BundleEvent::Started { attempt: deliveries })
            .await?;
        match tokio::fs::remove_dir_all(dir).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
        tokio::fs::create_dir_all(dir).await?;

        let names = archive::entry_names(&bundle.urls);
        let (budget, retries) = (AtomicU64::new(0), AtomicU32::new(self.settings.max_retries));
        let bounds = Bounds {
            deadline: Instant::now() + self.settings.deadline,
            retries: &retries,
            budget: &budget,
        };
        let downloads: Vec<Result<Option<PathBuf>, Interrupted>> =
            futures::stream::iter(bundle.urls.iter().cloned().enumerate())
                .map(|(index, url)| {
                    self.download(&bundle.bundle, index, url, &names[index], dir, &bounds)
                })
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
            self.emit(
                &bundle.bundle,
                BundleEvent::Failed { error: "nothing_downloaded".into(), message },
            )
            .await?;
            return Ok("failed");
        }

        let zip_path = dir.join("bundle.zip");
        let bytes = self
            .compress(&bundle.bundle, entries.clone(), zip_path.clone())
            .await?;
        let key = zip_key(&bundle.bundle);
        self.blobs.put_file(&key, &zip_path).await?;
        let expires = unix_now() + self.settings.link_ttl.as_secs();
        let link =
            orders_signed_link::sign(&format!("{DOWNLOAD_PATH}{key}"), expires, &self.settings.secret);
        let ready = BundleEvent::Ready { link, expires_at: rfc3339(expires), files: entries.len(), bytes };
        self.emit(&bundle.bundle, ready)
            .await?;
        Ok("ready")
    }

    async fn compress(
        &self,
        bundle: &str,
        entries: Vec<(String, PathBuf)>,
        out: PathBuf,
    ) -> Result<u64, Interrupted> {
        let progress = self.progress(bundle);
        let written = tokio::task::spawn_blocking(move || {
            let mut last: Option<Instant> = None;
            archive::write_zip(&entries, &out, |percent| {
                if percent == 100 || last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                    last = Some(Instant::now());
                    progress.publish(BundleEvent::Compress { percent });
                }
            })
        })
        .await??;
        Ok(written)
    }

    /// One URL, with retries; `Ok(None)` when it failed (the event says why).
    async fn download(
        &self,
        bundle: &str,
        index: usize,
        url: String,
        name: &str,
        dir: &Path,
        bounds: &Bounds<'_>,
    ) -> Result<Option<PathBuf>, Interrupted> {
        let path = dir.join(format!("{index}.part"));
        let mut attempt = 1;
        loop {
            let left = bounds.deadline.saturating_duration_since(Instant::now());
            let timeout = self.settings.fetch_timeout.min(left);
            let outcome = if left.is_zero() {
                Err(self.deadline_passed())
            } else {
                tokio::time::timeout(
                    timeout,
                    self.fetch_to_file(bundle, index, &url, &path, bounds.budget),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(if timeout < self.settings.fetch_timeout {
                        self.deadline_passed()
                    } else {
                        FetchFailure::new(
                            "timeout",
                            format!("not complete within {} s", timeout.as_secs_f64()),
                        )
                    })
                })
            };
            match outcome {
                Ok(bytes) => {
                    self.metrics.bundle_download("ok");
                    self.emit(
                        bundle,
                        BundleEvent::Downloaded { index, name: name.to_owned(), bytes },
                    )
                    .await?;
                    return Ok(Some(path));
                }
                Err(failure)
                    if failure.transient && attempt < ATTEMPTS && take_retry(bounds.retries) =>
                {
                    tracing::info!(target: "bundles", bundle, index, attempt, error = %failure.message, "retrying a download");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(failure) => {
                    self.metrics.bundle_download(failure.code);
                    let _ = tokio::fs::remove_file(&path).await;
                    let failed = BundleEvent::DownloadFailed { index, error: failure.code.to_owned(), message: failure.message };
                    self.emit(bundle, failed).await?;
                    return Ok(None);
                }
            }
        }
    }

    fn deadline_passed(&self) -> FetchFailure {
        FetchFailure::new(
            "bundle_deadline",
            format!(
                "the bundle's deadline of {} s passed",
                self.settings.deadline.as_secs()
            ),
        )
    }

    async fn fetch_to_file(
        &self,
        bundle: &str,
        index: usize,
        url: &str,
        path: &Path,
        budget: &AtomicU64,
    ) -> Result<u64, FetchFailure> {
        let (max_file, max_bundle) = (self.settings.max_file_bytes, self.settings.max_bundle_bytes);
        let too_large = || {
            FetchFailure::new(
                "too_large",
                format!("larger than the per-file limit of {}", human(max_file)),
            )
        };
        let mut response = self.fetcher.open(url).await?;
        let total = response.content_length();
        if total.is_some_and(|t| t > max_file) {
            return Err(too_large());
        }
        let disk =
            |e: std::io::Error| FetchFailure::new("storage", format!("cannot write the file: {e}"));
        let mut file = tokio::fs::File::create(path).await.map_err(disk)?;
        let mut reservation = Reservation { budget, bytes: 0 };
        let mut received = 0u64;
        let mut last_progress = Instant::now();
        let mut rate = RateFloor::new(self.settings.min_bytes_per_sec);
        let progress = self.progress(bundle);
        progress.publish(BundleEvent::Progress { index, received: 0, total });
        loop {
            let chunk = match rate.window_end() {
                Some(end) => tokio::time::timeout_at(end, response.chunk()).await.ok(),
                None => Some(response.chunk().await),
            };
            if let Some(chunk) = chunk {
                let Some(chunk) = chunk.map_err(|e| body_failure(url, e))? else {
                    break;
                };
                received += chunk.len() as u64;
                if received > max_file {
                    return Err(too_large());
                }
                if !reservation.grow(chunk.len() as u64, max_bundle) {
                    return Err(FetchFailure::new(
                        "bundle_too_large",
                        format!("the bundle would exceed its limit of {}", human(max_bundle)),
                    ));
                }
                file.write_all(&chunk).await.map_err(disk)?;
                rate.received(chunk.len() as u64);
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    progress.publish(BundleEvent::Progress { index, received, total });
                }
            }
            if !rate.keeps_up(tokio::time::Instant::now()) {
                let floor = self.settings.min_bytes_per_sec;
                return Err(FetchFailure::new(
                    "too_slow",
                    format!(
                        "slower than the minimum of {floor} bytes/s over {} s",
                        RATE_WINDOW.as_secs()
                    ),
                ));
            }
        }
        file.flush().await.map_err(disk)?;
        reservation.keep();
        Ok(received)
    }
}

/// The minimum transfer rate, judged per [`RATE_WINDOW`]: a server that
/// drips bytes is cut off after one window instead of holding a worker
/// until the fetch timeout.
struct RateFloor {
    bytes_per_sec: u64,
    window_start: tokio::time::Instant,
    window_bytes: u64,
}

impl RateFloor {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec,
            window_start: tokio::time::Instant::now(),
            window_bytes: 0,
        }
    }

    /// When the current window closes; `None` when no floor is set.
    fn window_end(&self) -> Option<tokio::time::Instant> {
        (self.bytes_per_sec > 0).then(|| self.window_start + RATE_WINDOW)
    }

    fn received(&mut self, bytes: u64) {
        self.window_bytes += bytes;
    }

    /// `false` once a whole window passed below the floor by `now`; starts
    /// the next window when one has passed above it.
    fn keeps_up(&mut self, now: tokio::time::Instant) -> bool {
        if self.bytes_per_sec == 0 || now < self.window_start + RATE_WINDOW {
            return true;
        }
        if self.window_bytes < self.bytes_per_sec * RATE_WINDOW.as_secs() {
            return false;
        }
        self.window_start = now;
        self.window_bytes = 0;
        true
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn reservations_give_back_what_they_do_not_keep() {
        let budget = AtomicU64::new(0);
        let mut kept = Reservation {
            budget: &budget,
            bytes: 0,
        };
        assert!(kept.grow(60, 100));
        kept.keep();
        {
            let mut dropped = Reservation {
                budget: &budget,
                bytes: 0,
            };
            assert!(dropped.grow(40, 100));
            assert!(!dropped.grow(1, 100), "over the limit");
        }
        assert_eq!(budget.load(Ordering::SeqCst), 60);
    }

    #[test]
    fn the_retry_budget_is_shared_and_bounded() {
        let budget = AtomicU32::new(2);
        assert!(take_retry(&budget) && take_retry(&budget));
        assert!(!take_retry(&budget) && !take_retry(&budget), "spent");
        assert_eq!(budget.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn two_claims_of_a_job_never_share_a_work_directory() {
        let job = |deliveries| Job {
            id: "1-0".into(),
            payload: Value::Null,
            deliveries,
        };
        let first = work_dir_name("abc", &job(1), "sidecar-1-aa-0");
        assert_ne!(
            first,
            work_dir_name("abc", &job(2), "sidecar-2-bb-0"),
            "taken over by another worker"
        );
        assert_ne!(
            first,
            work_dir_name("abc", &job(3), "sidecar-1-aa-0"),
            "back to the same worker later"
        );
        assert!(valid_key(&first), "a plain file name: {first}");
    }

    #[test]
    fn a_drip_falls_below_the_rate_floor_after_one_window() {
        let mut floor = RateFloor::new(100);
        let later = floor.window_start + RATE_WINDOW;
        floor.received(10);
        assert!(floor.keeps_up(floor.window_start), "the window is not over");
        assert!(
            !floor.keeps_up(later),
            "10 bytes in 5 s is below 100 bytes/s"
        );
        let mut steady = RateFloor::new(100);
        steady.received(600);
        assert!(steady.keeps_up(steady.window_start + RATE_WINDOW));
        assert_eq!(steady.window_bytes, 0, "a new window started");
        assert!(RateFloor::new(0).window_end().is_none(), "no floor");
    }

    #[test]
    fn jobs_are_parsed_strictly() {
        let job = |payload: Value| Job {
            id: "1".into(),
            payload,
            deliveries: 1,
        };
        assert!(parse_job(&job(json!({ "bundle": "abc", "urls": ["http://a/"] }))).is_some());
        assert!(parse_job(&job(json!({ "bundle": "../x", "urls": ["http://a/"] }))).is_none());
        assert!(parse_job(&job(json!({ "bundle": "abc", "urls": [] }))).is_none());
        assert!(parse_job(&job(json!({ "bundle": "abc", "urls": [1] }))).is_none());
    }
}
