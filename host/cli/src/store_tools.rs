//! What the offline store commands (`migrate`, `import`, `export`) share:
//! the store they work on, found exactly as `orders up` finds it, its name
//! for reports, progress bars, and telling a shared Redis cache about the
//! documents they rewrote.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use orders_sidecar::cache::Cache;
use orders_sidecar::cache::redis::RedisCache;
use orders_sidecar::store::{self, DocumentStore};

use crate::config::StoreOptions;

/// The API's name of the orders collection (its MongoDB name may differ).
pub use orders_vocabulary::names::ORDERS_COLLECTION as ORDERS;

pub struct OpenStore {
    pub store: Arc<dyn DocumentStore>,
    /// `mongodb orders_db.orders` or `the embedded store in .data/store`.
    pub description: String,
}

pub async fn open(options: &StoreOptions) -> Result<OpenStore> {
    let mongo = options.mongo_settings();
    let store = store::open(mongo.as_ref(), &options.embedded_store_dir()).await?.documents();
    let description = match &mongo {
        Some(settings) => format!("MongoDB {}.{}", settings.database, options.mongo_collection),
        None => format!(
            "the embedded store in {}",
            options.embedded_store_dir().display()
        ),
    };
    Ok(OpenStore { store, description })
}

/// A bar on stderr (stdout stays the report), hidden when it is not a terminal.
pub fn progress(total: u64, unit: &str) -> Result<ProgressBar> {
    let template =
        format!("{{bar:40}} {{pos}}/{{len}} {unit} [{{elapsed}} / ~{{eta}}] {{per_sec}}");
    Ok(ProgressBar::new(total).with_style(ProgressStyle::with_template(&template)?))
}

/// The Redis cache a running deployment shares, when one is configured, so
/// that documents rewritten here are not served from it as they were.
pub async fn shared_cache(options: &StoreOptions) -> Result<Option<RedisCache>> {
    let Some(url) = &options.redis_url else {
        return Ok(None);
    };
    let cache = RedisCache::connect(
        url.expose(),
        &options.redis_namespace(),
        Duration::from_secs(options.cache_ttl_secs),
    )
    .await?;
    Ok(Some(cache))
}

/// Drops the cached copies of the rewritten documents and pages.
pub async fn invalidate(cache: Option<&RedisCache>, ids: &[String]) -> Result<()> {
    if let Some(cache) = cache {
        for id in ids {
            cache
                .invalidate(ORDERS, id)
                .await
                .map_err(|e| anyhow::anyhow!("cannot invalidate the Redis cache: {e}"))?;
        }
    }
    Ok(())
}
