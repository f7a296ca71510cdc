#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright drives it; no browser is ever downloaded by a test tool).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium fonts-noto-cjk
