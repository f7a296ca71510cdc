#!/usr/bin/env bash
# Debian's PostgreSQL server and pgbench for the payments backend's tests and `liangcao pay bench`.
# Tests start their own throwaway server on 127.0.0.1 (liangcao.payments.pgserver); nothing runs as a service.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends postgresql
