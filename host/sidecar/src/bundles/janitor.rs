//! Removes what bundles leave behind once their links have expired: zips,
//! abandoned work directories, and (for the embedded backend) event logs and
//! used-link marks.

use std::sync::Arc;
use std::time::Duration;

use super::Pipeline;

const EVERY: Duration = Duration::from_secs(60);
/// A work directory this old belongs to no running job: one attempt is
/// bounded by the per-URL timeouts, far below this.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

impl Pipeline {
    pub(super) async fn clean_up(self: Arc<Self>) {
        loop {
            tokio::time::sleep(EVERY).await;
            self.sweep().await;
        }
    }

    pub async fn sweep(&self) {
        // A zip outlives its link by a minute, so a download that started
        // just before the expiry can finish.
        let zip_age = self.settings.link_ttl + Duration::from_secs(60);
        match self.blobs.remove_older_than("bundle-", zip_age).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(target: "bundles", removed, "expired bundle zips removed"),
            Err(error) => tracing::warn!(target: "bundles", %error, "cannot sweep expired bundle zips"),
        }
        if let Err(error) = remove_old_dirs(&self.work_root, ABANDONED_AFTER).await {
            tracing::warn!(target: "bundles", %error, "cannot sweep abandoned bundle work directories");
        }
        if let Err(error) = self.events.remove_expired().await {
            tracing::warn!(target: "bundles", %error, "cannot remove expired bundle events");
        }
    }
}

async fn remove_old_dirs(root: &std::path::Path, age: Duration) -> std::io::Result<()> {
    let mut entries = tokio::fs::read_dir(root).await?;
    while let Some(entry) = entries.next_entry().await? {
        let metadata = entry.metadata().await?;
        if metadata.is_dir() && metadata.modified()?.elapsed().unwrap_or_default() > age {
            tokio::fs::remove_dir_all(entry.path()).await?;
        }
    }
    Ok(())
}
