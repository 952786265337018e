//! The components' own unit tests (validation rules, ETag and paging, the audit query, the client address
//! parsing, bundle URLs and state, the bundle page's CSP) run natively: the
//! crates are plain Rust over spin-sdk types, so they compile for the host as
//! well as for wasm32-wasip2.

use std::process::Command;

#[test]
fn shared_component_library_unit_tests_pass() {
    let host = env!("ORDERS_HOST_TRIPLE");
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--release", "-p", "orders-common", "-p", "bundles-create", "-p", "bundles-page", "-p", "audit", "--target", host])
        .current_dir(orders_testkit::repo_root().join("functions"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo test for the component crates");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(output.status.success(), "component unit tests failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.matches("test result: ok").count() >= 3, "a crate's test summary is missing in:\n{stdout}");
}
