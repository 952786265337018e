//! The names of what the sidecar allow-lists: one definition for the
//! components that address them, the sidecar's defaults and the worker.

/// The collection of orders (`/v1/docs/orders`).
pub const ORDERS_COLLECTION: &str = "orders";

/// The job stream of bundles (`/v1/streams/bundles`): one job per bundle.
pub const BUNDLE_STREAM: &str = "bundles";

/// The event logs of bundles (`/v1/logs/bundles/{bundle id}`). Logs are
/// allow-listed with the streams, so it is the stream's name.
pub const BUNDLE_LOG: &str = BUNDLE_STREAM;
