#!/usr/bin/env bash
# The whole test suite: builds the Wasm components and the host, then runs
# every test (unit, runner, contract, store conformance, cluster, faults).
# The tests start the services they need (MongoDB-wire server, Redis, nginx)
# themselves, on loopback; `.ci/run` installs them on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orders-target}"
(cd functions && env -u CARGO_TARGET_DIR cargo build --release --target wasm32-wasip2)
cargo build --release --workspace --all-targets
exec cargo nextest run --release --workspace --no-fail-fast --failure-output final
