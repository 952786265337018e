#!/usr/bin/env bash
# A flame graph of `orders up` serving cached GET /orders/{id}.
#
#   bench/flamegraph.sh OUT.svg [--bin PATH] [--repo DIR] [-- extra `orders up` flags]
#
# Starts `orders up` (embedded store) from DIR (default: this checkout, whose
# built components it serves; --bin defaults to the release binary under
# $CARGO_TARGET_DIR or ~/.cache/orders-target), creates one order, warms the
# cache with wrk, then samples the process with `perf record --call-graph
# dwarf` for 8 s while `wrk -t1 -c16` keeps reading that order, and renders
# the stacks with inferno. Prints the CPU-µs per request of the sampled
# window. Needs perf (Debian: linux-perf) and wrk; installs inferno with
# cargo when it is missing. Listens on 127.0.0.1 only; stops what it starts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:?usage: bench/flamegraph.sh OUT.svg [--bin PATH] [--repo DIR] [-- orders up flags]}
shift
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/orders-target}/release/orders
REPO=$ROOT
while (($#)); do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --repo) REPO=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
OUT=$(realpath -m "$OUT")
command -v perf >/dev/null || { echo "perf is missing (apt-get install linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 1; }
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install --locked inferno
fi

WORK=$(mktemp -d)
PID=""
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Warnings only, as the benchmarks run it: an access-log line per request would be part of the picture.
(cd "$REPO" && ORDERS_LOG=${ORDERS_LOG:-warn} exec "$BIN" up --no-build --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" "$@") >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 150); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && [[ -s $WORK/data/admin-key ]] && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/log" >&2; exit 1; }
  sleep 0.2
done
KEY=$(cat "$WORK/data/admin-key")
ID=$(curl -sf -X POST "http://127.0.0.1:$PORT/orders" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"product":"Banner","quantity":3,"customer_name":"Ada","customer_address":"1 Main St"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["order"]["_id"])')
cat >"$WORK/get.lua" <<EOF
wrk.headers["authorization"] = "Bearer $KEY"
wrk.path = "/orders/$ID"
EOF
URL=http://127.0.0.1:$PORT
echo "warming the cache ..." >&2
wrk -t1 -c16 -d3s -s "$WORK/get.lua" "$URL" >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
echo "sampling 8 s of cached GET /orders/{id} ..." >&2
BEFORE=$(cpu_ticks)
perf record -F 499 --call-graph dwarf,16384 -p "$PID" -o "$WORK/perf.data" -- sleep 8 >/dev/null 2>&1 &
PERF=$!
WRK=$(wrk -t1 -c16 -d8s -s "$WORK/get.lua" "$URL")
wait "$PERF"
AFTER=$(cpu_ticks)
REQUESTS=$(awk '/requests in/ {print $1}' <<<"$WRK")
TICK=$(getconf CLK_TCK)
echo "$REQUESTS requests, $(awk '/Requests\/sec/ {print $2}' <<<"$WRK") req/s, $(( (AFTER - BEFORE) * 1000000 / TICK / REQUESTS )) CPU-µs per request (while sampled)"
echo "rendering ..." >&2
perf script --no-inline -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/stacks"
inferno-flamegraph --title "orders up: cached GET /orders/{id}" --width 1400 <"$WORK/stacks" >"$OUT"
echo "wrote $OUT"
