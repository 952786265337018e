#!/usr/bin/env bash
# The whole test suite: installs what the tests need when it is missing
# (tests/install.sh: Debian packages, the wasm32-wasip2 target, SecantusDB,
# the manifest validators, Chromium), builds the Wasm components and the
# host, then runs every test (unit, runner, contract, store conformance,
# cluster, faults, browser). The tests start the services they need
# (MongoDB-wire server, Redis, nginx) themselves, on loopback.
#
#   ./test.sh [--build-only]
set -euo pipefail
cd "$(dirname "$0")"
bash tests/install.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orders-target}"
(cd functions && env -u CARGO_TARGET_DIR cargo build --release --target wasm32-wasip2)
cargo build --release --workspace --all-targets
[[ ${1:-} == --build-only ]] && exit 0
exec cargo nextest run --release --workspace --no-fail-fast --failure-output final
