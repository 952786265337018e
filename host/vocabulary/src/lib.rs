//! The vocabulary the components (`functions/`) and the sidecar
//! (`host/sidecar`) share, so that the compiler checks the contract between
//! them instead of two hand-written copies of it (docs/adr/0012):
//!
//! - [`id`]: what an ObjectId is (orders and bundles alike);
//! - [`names`]: the collections, job streams and event logs the sidecar
//!   allows;
//! - [`page`]: how many documents a page holds;
//! - [`api`]: the request and response bodies of the sidecar API
//!   (`docs/sidecar-api.md`) and its error codes;
//! - [`bundle`]: the job `POST /bundles` queues for the worker and the
//!   events the worker (and the component) write to a bundle's log.

pub mod api;
pub mod bundle;
pub mod id;
pub mod names;
pub mod page;
