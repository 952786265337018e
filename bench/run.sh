#!/usr/bin/env bash
# Benchmarks of the orders API against its peers, measured side by side in
# one run on this machine: the old Flask service, a native axum reference,
# and Spin when a `spin` binary is on PATH.
#
#   bench/run.sh [SCENARIO|all] [--quick] [--no-build|--build-only]
#
# SCENARIO: get-by-id, get-by-id-cold, list, create, update, half-rate,
# mixed, peak, scaling, budget, costs, embedded (default: all), and two that
# `all` leaves out: peak-10k (only the ramp of `peak` on to 10,000 users,
# ~3 minutes) and locust-cross-check (Locust itself beside users.py at 200
# and 500 users, ~5 minutes).
# --quick    small data and short runs (under 5 minutes): checks that the
#            harness works end to end, as CI does; its numbers mean little.
# --no-build use the binaries and components as they are.
# --build-only build them (and install what the run needs), then stop.
#
# Prints a table and writes docs/benchmarks.{md,json,svg} (a --quick run writes
# them into its run directory instead, so it never replaces the committed
# results). Everything listens on 127.0.0.1 only; every process started is
# stopped by its PID on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}
TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/orders-target}
ORDERS_BIN=$TARGET_DIR/release/orders
AXUM_TARGET_DIR=$TARGET_DIR/bench
AXUM_BIN=$AXUM_TARGET_DIR/release/orders-axum-reference
VENV=$CACHE/orders-bench/venv
SECANTUS_ROOT=$CACHE/orders-ci/secantus

SCENARIO=all
QUICK=""
BUILD=1
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=--quick ;;
    --no-build) BUILD=0 ;;
    --build-only) BUILD=only ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $arg (see bench/run.sh --help)" >&2; exit 2 ;;
    *) SCENARIO=$arg ;;
  esac
done

# A run is bounded: quick runs are a smoke test, full runs take 20-40 minutes.
if [[ -n $QUICK ]]; then LIMIT=270; else LIMIT=5400; fi

mkdir -p "$CACHE/orders-bench/runs"
# Keep the logs of the last few runs only. `find`, not a glob under `ls`:
# on a machine where the harness never ran there is nothing to list, and
# under pipefail a failing `ls` would end the script with no output.
find "$CACHE/orders-bench/runs" -mindepth 1 -maxdepth 1 -type d | sort | head -n -5 | xargs -r rm -rf
RUN_DIR=$(mktemp -d "$CACHE/orders-bench/runs/$(date +%Y%m%d-%H%M%S)-XXXX")
PIDFILE=$RUN_DIR/pids
HARNESS_PID=""

stop_pid() {
  local pid=$1 waited=0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && (( waited < 150 )); do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n $HARNESS_PID ]]; then stop_pid "$HARNESS_PID"; fi
  # Whatever the harness left running (it keeps this list current).
  if [[ -s $PIDFILE ]]; then
    while read -r pid name; do
      [[ -n $pid ]] || continue
      echo "stopping leftover $name (pid $pid)" >&2
      stop_pid "$pid"
    done < "$PIDFILE"
  fi
  rm -rf "$RUN_DIR/secantus" "$RUN_DIR"/*/store "$RUN_DIR"/ours-embedded/store 2>/dev/null || true
  echo "logs of this run: $RUN_DIR" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wrk, taskset, Redis, nginx and SecantusDB, from the installer the tests use.
bash "$ROOT/tests/install.sh" packages secantus bench
SECANTUS=$(command -v secantusd-rs || echo "$SECANTUS_ROOT/bin/secantusd-rs")

if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import flask, flask_pymongo, gunicorn, pymongo" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet flask flask_pymongo gunicorn pymongo >&2
fi
# Locust itself, for locust-cross-check; pinned so that runs compare.
LOCUST_VERSION=2.47.0
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('locust') != '$LOCUST_VERSION')" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet "locust==$LOCUST_VERSION" >&2 \
    || echo "locust $LOCUST_VERSION did not install: locust-cross-check cannot run" >&2
fi
# A faster event loop for the user-model generator, when it installs.
"$VENV/bin/python" -c "import uvloop" 2>/dev/null || "$VENV/bin/pip" install --quiet uvloop >&2 || true

if [[ $BUILD != 0 ]]; then
  echo "building the components, the orders binary and the axum reference (no-ops when fresh)" >&2
  (cd "$ROOT/functions" && env -u CARGO_TARGET_DIR nice cargo build --release --target wasm32-wasip2 --quiet)
  # The same build as ./test.sh's: `-p orders` alone resolves other features
  # for tokio, hyper, the MongoDB driver and wasmtime-wasi than the test
  # targets do, so it would compile them all a second time.
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR nice cargo build --release --workspace --all-targets --quiet)
  (cd "$BENCH_DIR/peers/axum-reference" && CARGO_TARGET_DIR=$AXUM_TARGET_DIR nice cargo build --release --quiet)
fi
[[ $BUILD == only ]] && exit 0
for binary in "$ORDERS_BIN" "$AXUM_BIN"; do
  [[ -x $binary ]] || { echo "missing $binary: run without --no-build" >&2; exit 1; }
done

if [[ -n $QUICK ]]; then DOCS=$RUN_DIR/report; else DOCS=$ROOT/docs; fi

# The user model holds one connection per user (10,000 and more).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

timeout --signal=TERM --kill-after=30 "$LIMIT" \
  "$VENV/bin/python" "$BENCH_DIR/harness.py" "$SCENARIO" $QUICK \
    --run-dir "$RUN_DIR" --pidfile "$PIDFILE" --orders-bin "$ORDERS_BIN" --axum-bin "$AXUM_BIN" \
    --secantus "$SECANTUS" --venv "$VENV" --docs "$DOCS" &
HARNESS_PID=$!
wait "$HARNESS_PID"
