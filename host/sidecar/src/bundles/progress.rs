//! Progress events, written without ever holding the work they report on.
//!
//! Progress is advisory: losing one loses nothing the next won't say. What
//! must not happen is a download or the compression waiting for the event
//! log: with Redis cut off, every append waits until the connection heals,
//! and a download that waits for its progress event runs into its own
//! timeout and fails although the file server was fine. So each source of
//! progress (one URL, or the compression) hands its event to a task of its
//! own, and while one is still being written the next ones are skipped.
//! A late event cannot undo an ended file: the fold ignores progress on a
//! file that is done or failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orders_vocabulary::bundle::BundleEvent;

use super::LOG;
use crate::events::EventLog;

/// Publishes one source's progress events of one bundle.
pub(super) struct Progress {
    events: Arc<dyn EventLog>,
    ttl: Duration,
    bundle: String,
    runtime: tokio::runtime::Handle,
    /// An event of this source is still being written.
    writing: Arc<AtomicBool>,
}

impl Progress {
    /// Must be called on the runtime; `publish` may then be called anywhere,
    /// also from a blocking thread.
    pub(super) fn new(events: Arc<dyn EventLog>, ttl: Duration, bundle: &str) -> Self {
        Self {
            events,
            ttl,
            bundle: bundle.to_owned(),
            runtime: tokio::runtime::Handle::current(),
            writing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Writes `event` in the background, unless the previous one is still
    /// being written; never waits.
    pub(super) fn publish(&self, event: BundleEvent) {
        if self.writing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (events, ttl, bundle, writing) =
            (self.events.clone(), self.ttl, self.bundle.clone(), self.writing.clone());
        self.runtime.spawn(async move {
            let (name, data) = event.to_parts();
            if let Err(error) = events.append(LOG, &bundle, &name, &data, ttl).await {
                tracing::debug!(target: "bundles", bundle, %error, "progress event lost");
            }
            writing.store(false, Ordering::Release);
        });
    }
}
