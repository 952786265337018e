#!/usr/bin/env bash
# Installs what the tests (and the benchmarks) need on a Debian 12 machine,
# skipping whatever is already there, so ./test.sh and .ci/run work on a
# fresh machine and cost a second on a warm one.
#
#   tests/install.sh [GROUP...]    GROUP: packages rust secantus validators browser bench
#                                  (default: all but bench)
#
# apt needs root or passwordless sudo. Everything else goes under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}
SECANTUS_VERSION=0.5.3-beta.193
SECANTUS_ROOT=$CACHE/orders-ci/secantus
VENV=$CACHE/orders-ci/venv

say() { printf 'install: %s\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif sudo -n true 2>/dev/null; then sudo "$@"
  else say "needs root to run: $*"; exit 1
  fi
}

apt_updated=""
# Installs the Debian packages that are missing. A service the package starts
# (redis-server, nginx) is stopped and disabled: the tests start their own on
# free loopback ports, and a packaged one must not hold ports or files.
apt_packages() {
  local missing=() package
  for package in "$@"; do
    # `dpkg -s` also succeeds for a removed package whose config files stay.
    [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == "install ok installed" ]] || missing+=("$package")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} (apt-get)"
  if [[ -z $apt_updated ]]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for package in "${missing[@]}"; do
    case $package in
      redis-server|nginx)
        as_root systemctl disable --now "$package" >/dev/null 2>&1 \
          || as_root service "$package" stop >/dev/null 2>&1 || true ;;
    esac
  done
}

group_packages() { apt_packages redis-server nginx cmake pkg-config openssl python3-venv; }

group_rust() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "adding the wasm32-wasip2 target (rustup target add wasm32-wasip2)"
    rustup target add wasm32-wasip2 >&2
  fi
  if ! command -v cargo-nextest >/dev/null; then
    say "installing cargo-nextest (cargo install, a few minutes, once)"
    cargo install cargo-nextest --locked >&2
  fi
}

# The MongoDB-wire server the MongoDB path is tested against (../shared/MONGO.md).
group_secantus() {
  if "$SECANTUS_ROOT/bin/secantusd-rs" --version 2>/dev/null | grep -q "$SECANTUS_VERSION" \
     || grep -qsx "$SECANTUS_VERSION" "$SECANTUS_ROOT/.version"; then
    return 0
  fi
  apt_packages cmake
  say "installing SecantusDB $SECANTUS_VERSION into $SECANTUS_ROOT (cargo install, ~8 minutes, once)"
  cargo install secantus-mdb --version "$SECANTUS_VERSION" --locked --ignore-rust-version --root "$SECANTUS_ROOT" >&2
  echo "$SECANTUS_VERSION" > "$SECANTUS_ROOT/.version"
}

group_validators() {
  local wanted
  wanted=$(grep -v '^#' tests/validators.txt)
  [[ $(cat "$VENV/.installed" 2>/dev/null) == "$wanted" ]] && return 0
  apt_packages python3-venv
  say "installing the manifest validators into $VENV (pip)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r tests/validators.txt >&2
  echo "$wanted" > "$VENV/.installed"
}

group_browser() { bash tests/browser/install.sh >&2; }

group_bench() { apt_packages wrk util-linux; }

groups=("$@")
((${#groups[@]})) || groups=(packages rust secantus validators browser)
for group in "${groups[@]}"; do
  case $group in
    packages|rust|secantus|validators|browser|bench) "group_$group" ;;
    *) say "unknown group $group"; exit 2 ;;
  esac
done
