//! The bundle worker: takes bundle jobs off the `bundles` stream, downloads
//! their URLs (guarded, limited, retried), zips them, signs a one-time link,
//! and writes every step to the bundle's event log, which is all the
//! components read. Runs natively in the sidecar (docs/adr/0006).
//!
//! Processing is at-least-once: a job whose worker dies is claimed again
//! after `claim_timeout`, and every step can simply run again (a fresh work
//! directory per attempt, the zip put atomically, a finished bundle skipped).

pub mod address;
pub mod archive;
pub mod fetch;
mod janitor;
mod progress;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::blobs::BlobStore;
use crate::events::EventLog;
use crate::metrics::SidecarMetrics;
use crate::queue::JobQueue;

pub use fetch::{FetchSettings, ResolveEntry};

/// The job stream and the event log the pipeline uses.
pub use orders_vocabulary::names::{BUNDLE_LOG as LOG, BUNDLE_STREAM as STREAM};

/// `Debug` leaves the secret out (settings are logged at start).
#[derive(Clone)]
pub struct BundleSettings {
    /// Signs download links; nginx's `secure_link_md5` holds the same.
    pub secret: String,
    pub link_ttl: Duration,
    pub max_file_bytes: u64,
    pub max_bundle_bytes: u64,
    /// Per URL, redirects and retries excluded: one attempt's whole download.
    pub fetch_timeout: Duration,
    pub fetch: FetchSettings,
    /// Jobs processed at once by this sidecar.
    pub workers: usize,
    /// Downloads at once within one job.
    pub downloads_per_job: usize,
    /// A claimed job not heard of for this long is handed to another worker.
    pub claim_timeout: Duration,
    /// One attempt of a bundle, all its URLs: downloads still running then
    /// fail with `bundle_deadline` and the zip holds what finished.
    pub deadline: Duration,
    /// A download slower than this over a whole window fails with
    /// `too_slow` (0: no floor).
    pub min_bytes_per_sec: u64,
    /// Retries of failed downloads, for all the bundle's URLs together.
    pub max_retries: u32,
}

impl std::fmt::Debug for BundleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleSettings")
            .field("secret", &"<redacted>")
            .field("link_ttl", &self.link_ttl)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("max_bundle_bytes", &self.max_bundle_bytes)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("fetch", &self.fetch)
            .field("workers", &self.workers)
            .field("downloads_per_job", &self.downloads_per_job)
            .field("claim_timeout", &self.claim_timeout)
            .field("deadline", &self.deadline)
            .field("min_bytes_per_sec", &self.min_bytes_per_sec)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl BundleSettings {
    /// How long a bundle's events and marks are kept: past its link's life.
    pub fn events_ttl(&self) -> Duration {
        self.link_ttl + Duration::from_secs(3600)
    }
}

/// What the workers share.
pub struct Pipeline {
    settings: BundleSettings,
    fetcher: fetch::Fetcher,
    queue: Arc<dyn JobQueue>,
    events: Arc<dyn EventLog>,
    blobs: Arc<BlobStore>,
    work_root: PathBuf,
    metrics: SidecarMetrics,
}

impl Pipeline {
    pub fn new(
        settings: BundleSettings,
        queue: Arc<dyn JobQueue>,
        events: Arc<dyn EventLog>,
        blobs: Arc<BlobStore>,
        work_root: PathBuf,
        metrics: SidecarMetrics,
    ) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&work_root).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the bundle work directory {}: {e}",
                work_root.display()
            )
        })?;
        let fetcher = fetch::Fetcher::new(settings.fetch.clone())?;
        Ok(Arc::new(Self {
            settings,
            fetcher,
            queue,
            events,
            blobs,
            work_root,
            metrics,
        }))
    }

    /// Starts the workers and the janitor on the current runtime.
    pub fn spawn(self: &Arc<Self>) {
        let prefix = format!(
            "sidecar-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        for n in 0..self.settings.workers {
            tokio::spawn(self.clone().work(format!("{prefix}-{n}")));
        }
        tokio::spawn(self.clone().clean_up());
    }
}
