//! The bundle pipeline's flags: limits, the fetch allow-list, workers, and
//! the secret that signs download links.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use orders_sidecar::bundles::address::AllowEntry;
use orders_sidecar::bundles::{BundleSettings, FetchSettings, ResolveEntry};
use orders_sidecar::queue::StreamLimits;

use crate::config::check_secret;
use crate::settings::secret::Secret;

/// What the components are told about bundles, so the instances of a
/// cluster (`orders serve`) and the sidecar agree: the secret that signs
/// download links and the most URLs one bundle may ask for.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ComponentBundleOptions {
    /// Secret signing download links (nginx's secure_link_md5 must hold the same); kept in <data-dir>/download-secret when absent.
    #[arg(long, env = "ORDERS_DOWNLOAD_SECRET", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_secret: Option<Secret>,
    /// Most URLs one bundle may ask for.
    #[arg(long, env = "ORDERS_BUNDLE_MAX_URLS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub bundle_max_urls: u32,
}

impl ComponentBundleOptions {
    pub fn check(&self) -> Result<()> {
        match &self.download_secret {
            Some(secret) => check_secret(secret, "--download-secret / ORDERS_DOWNLOAD_SECRET"),
            None => Ok(()),
        }
    }

    /// The secret from the flag, else the one kept in the data directory
    /// (made on first use), so links survive restarts.
    pub fn secret(&self, data_dir: &Path) -> Result<Secret> {
        match &self.download_secret {
            Some(secret) => Ok(secret.clone()),
            None => kept_secret(data_dir),
        }
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct BundleOptions {
    #[command(flatten)]
    #[serde(flatten)]
    pub components: ComponentBundleOptions,
    /// How long a download link works, in seconds.
    #[arg(long, env = "ORDERS_LINK_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=604_800))]
    pub link_ttl_secs: u64,
    /// Largest file one URL may deliver, in bytes.
    #[arg(long, env = "ORDERS_BUNDLE_MAX_FILE_BYTES", default_value_t = 25 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub bundle_max_file_bytes: u64,
    /// Largest sum of the files of one bundle, in bytes.
    #[arg(long, env = "ORDERS_BUNDLE_MAX_BYTES", default_value_t = 100 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub bundle_max_bytes: u64,
    /// Time allowed for one URL's download (each attempt), in milliseconds.
    #[arg(long, env = "ORDERS_FETCH_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub fetch_timeout_ms: u64,
    /// Redirects followed per URL.
    #[arg(long, env = "ORDERS_FETCH_MAX_REDIRECTS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=20))]
    pub fetch_max_redirects: u64,
    /// HOST or HOST:PORT that may be fetched even though it is private or loopback; without a port only the URL scheme's default port (repeatable; env: comma-separated).
    #[arg(
        long = "fetch-allow",
        env = "ORDERS_FETCH_ALLOW",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub fetch_allow: Vec<String>,
    /// NAME=ADDRESS the worker resolves without DNS, like curl --resolve; the address is still checked (repeatable; env: comma-separated).
    #[arg(
        long = "fetch-resolve",
        env = "ORDERS_FETCH_RESOLVE",
        value_delimiter = ',',
        value_name = "NAME=ADDRESS"
    )]
    pub fetch_resolve: Vec<String>,
    /// A download slower than this many bytes per second over 5 s fails with too_slow (0: no floor).
    #[arg(long, env = "ORDERS_FETCH_MIN_BYTES_PER_SEC", default_value_t = 1024)]
    pub fetch_min_bytes_per_sec: u64,
    /// Time allowed for one attempt of a whole bundle, in milliseconds; downloads still running then fail with bundle_deadline.
    #[arg(long, env = "ORDERS_BUNDLE_DEADLINE_MS", default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1000..=86_400_000))]
    pub bundle_deadline_ms: u64,
    /// Retries of failed downloads per bundle, all its URLs together.
    #[arg(long, env = "ORDERS_BUNDLE_MAX_RETRIES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub bundle_max_retries: u32,
    /// Bundles queued or running at once, overall; past it POST /bundles answers 503 + Retry-After.
    #[arg(long, env = "ORDERS_BUNDLE_MAX_QUEUED", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub bundle_max_queued: u64,
    /// Bundles queued or running at once per client; past it POST /bundles answers 429.
    #[arg(long, env = "ORDERS_BUNDLE_MAX_QUEUED_PER_CLIENT", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub bundle_max_queued_per_client: u64,
    /// Bundle jobs this process works on at once (0: run no worker here).
    #[arg(long, env = "ORDERS_BUNDLE_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub bundle_workers: u64,
    /// Downloads at once within one bundle.
    #[arg(long, env = "ORDERS_BUNDLE_DOWNLOADS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub bundle_downloads: u64,
    /// A job whose worker is silent this long is taken over by another, in milliseconds.
    #[arg(long, env = "ORDERS_BUNDLE_CLAIM_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1000..=3_600_000))]
    pub bundle_claim_timeout_ms: u64,
}

impl BundleOptions {
    /// The allow and resolve lists parse, and the secret is long enough.
    pub fn check(&self) -> Result<()> {
        self.components.check()?;
        self.settings(String::new()).map(drop)
    }

    pub fn settings(&self, secret: String) -> Result<BundleSettings> {
        let allow = self
            .fetch_allow
            .iter()
            .filter(|a| !a.trim().is_empty())
            .map(|a| AllowEntry::parse(a).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?;
        let resolve = self
            .fetch_resolve
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| ResolveEntry::parse(r).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?;
        Ok(BundleSettings {
            secret,
            link_ttl: Duration::from_secs(self.link_ttl_secs),
            max_file_bytes: self.bundle_max_file_bytes,
            max_bundle_bytes: self.bundle_max_bytes,
            fetch_timeout: Duration::from_millis(self.fetch_timeout_ms),
            fetch: FetchSettings {
                max_redirects: self.fetch_max_redirects as usize,
                connect_timeout: Duration::from_millis(self.fetch_timeout_ms.min(10_000)),
                allow,
                resolve,
            },
            workers: self.bundle_workers as usize,
            downloads_per_job: self.bundle_downloads as usize,
            claim_timeout: Duration::from_millis(self.bundle_claim_timeout_ms),
            deadline: Duration::from_millis(self.bundle_deadline_ms),
            min_bytes_per_sec: self.fetch_min_bytes_per_sec,
            max_retries: self.bundle_max_retries,
        })
    }

    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            max_queued: self.bundle_max_queued,
            max_queued_per_key: self.bundle_max_queued_per_client,
        }
    }
}

/// `<data_dir>/download-secret`, created with a random value (mode 0600)
/// the first time.
fn kept_secret(data_dir: &Path) -> Result<Secret> {
    let path = data_dir.join("download-secret");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 16 => return Ok(Secret::new(text.trim())),
        Ok(_) => anyhow::bail!(
            "{} holds no usable secret (16+ characters); remove it to make a new one",
            path.display()
        ),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let secret = crate::run::random_token();
    match crate::private_file::create_private(&path, secret.expose().as_bytes()) {
        Ok(()) => {}
        // Another process made it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            return kept_secret(data_dir);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot create {}", path.display()));
        }
    }
    Ok(secret)
}
