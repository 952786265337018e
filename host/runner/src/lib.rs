//! A Spin-compatible runner for the orders components: it reads the
//! repository's `spin.toml` and serves every HTTP trigger on wasmtime, as
//! `spin up` would, with the sidecar optionally answered in-process.

pub mod app;
pub mod budget;
pub mod client;
pub mod compile;
pub mod connections;
pub mod engine;
pub mod headers;
pub mod limits;
pub mod manifest;
pub mod method_routes;
pub mod metrics;
pub mod outbound;
pub mod routes;
pub mod server;
pub mod sidecar_hop;
pub mod slots;
pub mod state;
pub mod streams;
pub mod variables;
pub mod well_known;

pub use app::{AppConfig, AppShared, BoxError, InProcessService, ServiceBody, ServiceFuture};
pub use limits::Limits;
pub use metrics::RunnerMetrics;
pub use server::{Edge, MetricsSource, serve};
pub use sidecar_hop::SidecarRoute;
