#!/usr/bin/env bash
# Installs what tests/browser/bundle-e2e.mjs needs on a Debian 12 machine (as
# root, or with passwordless sudo for apt): Chromium, Node.js with npm, and playwright-core from
# package-lock.json. Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'browser-tests: %s\n' "$*"; }
apt_updated=
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ -x /usr/bin/chromium ]; then
  say "chromium present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
else
  say "installing chromium"
  apt_install chromium fonts-liberation
fi

if command -v node >/dev/null; then
  say "node present ($(node --version))"
else
  say "installing nodejs"
  apt_install nodejs
fi
if command -v npm >/dev/null; then
  say "npm present ($(npm --version 2>/dev/null))"
else
  say "installing npm"
  apt_install npm
fi

# node_modules is stale when package-lock.json changed after the last install.
if [ -d node_modules/playwright-core ] && [ ! package-lock.json -nt node_modules ]; then
  say "node_modules up to date"
else
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  touch node_modules
fi
