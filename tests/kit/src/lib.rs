//! Fixtures shared by the suites in `tests/`: real services started on
//! loopback by the tests themselves (MongoDB-wire server, Redis), the
//! product started the way users start it, and the contract suite that
//! every way of running the product must pass.

pub mod bundle_client;
pub mod checks;
pub mod contract;
pub mod fault_proxy;
pub mod file_server;
pub mod openapi;
pub mod process;
pub mod product;
pub mod services;

use std::path::PathBuf;

/// The repository root (this crate lives in `tests/kit`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}
