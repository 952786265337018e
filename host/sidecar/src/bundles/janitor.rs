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
        match self.blobs.remove_older_than(orders_vocabulary::bundle::ZIP_KEY_PREFIX, zip_age).await {
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;
    use crate::blobs::BlobStore;
    use crate::bundles::{BundleSettings, FetchSettings};
    use crate::events::EventLog;
    use crate::events::sqlite::SqliteEvents;
    use crate::metrics::SidecarMetrics;
    use crate::queue::sqlite::SqliteQueue;

    fn age(path: &std::path::Path, by: Duration) {
        let file = std::fs::File::options().write(true).open(path).or_else(|_| std::fs::File::open(path)).unwrap();
        file.set_modified(SystemTime::now() - by).unwrap();
    }

    #[tokio::test]
    async fn sweeps_what_expired_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(BlobStore::open(dir.path().join("blobs")).unwrap());
        let events: Arc<dyn EventLog> = Arc::new(SqliteEvents::open(dir.path()).unwrap());
        let settings = BundleSettings {
            secret: "s".repeat(16),
            link_ttl: Duration::from_secs(600),
            max_file_bytes: 1,
            max_bundle_bytes: 1,
            fetch_timeout: Duration::from_secs(1),
            fetch: FetchSettings { max_redirects: 0, connect_timeout: Duration::from_secs(1), allow: Vec::new(), resolve: Vec::new() },
            workers: 0,
            downloads_per_job: 1,
            claim_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
            min_bytes_per_sec: 0,
            max_retries: 0,
        };
        let work_root = dir.path().join("work");
        let pipeline = Pipeline::new(
            settings,
            Arc::new(SqliteQueue::open(dir.path()).unwrap()),
            events.clone(),
            blobs.clone(),
            work_root.clone(),
            SidecarMetrics::new(orders_telemetry::Registry::default()),
        )
        .unwrap();

        blobs.put("bundle-old.zip", b"old").await.unwrap();
        blobs.put("bundle-new.zip", b"new").await.unwrap();
        blobs.put("other.bin", b"not a bundle").await.unwrap();
        age(&dir.path().join("blobs/bundle-old.zip"), Duration::from_secs(700));
        age(&dir.path().join("blobs/other.bin"), Duration::from_secs(700));
        std::fs::create_dir_all(work_root.join("abandoned")).unwrap();
        std::fs::create_dir_all(work_root.join("running")).unwrap();
        age(&work_root.join("abandoned"), Duration::from_secs(7200));
        events.append("bundles", "gone", "queued", &json!({}), Duration::from_millis(1)).await.unwrap();
        events.append("bundles", "kept", "queued", &json!({}), Duration::from_secs(60)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;

        pipeline.sweep().await;
        assert_eq!(blobs.get("bundle-old.zip").await.unwrap(), None, "a zip past its link");
        assert!(blobs.get("bundle-new.zip").await.unwrap().is_some());
        assert!(blobs.get("other.bin").await.unwrap().is_some(), "only bundle zips are swept");
        assert!(!work_root.join("abandoned").exists());
        assert!(work_root.join("running").exists());
        assert!(events.read("bundles", "gone", None, 10).await.unwrap().is_empty());
        assert_eq!(events.read("bundles", "kept", None, 10).await.unwrap().len(), 1);
    }
}
