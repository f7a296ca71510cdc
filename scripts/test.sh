#!/usr/bin/env bash
# Install liangcao with its test tools (and Debian's Chromium for the browser tests, Debian's PostgreSQL for
# the payments backend) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/install-chromium.sh
bash scripts/install-postgres.sh
bash scripts/install-nats.sh
exec .venv/bin/python -m pytest "$@"
