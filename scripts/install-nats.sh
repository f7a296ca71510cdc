#!/usr/bin/env bash
# Debian's nats-server: the consortium's ordering service (one JetStream server per organisation).
# Tests start their own cluster on 127.0.0.1 (liangcao.ordering.natsserver); nothing runs as a service.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends nats-server
