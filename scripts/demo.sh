#!/usr/bin/env bash
# The main job: install liangcao, create a local 3-organisation network on embedded defaults (SQLite, in-process
# ordering), run the demo scenario through the SDK and keep serving the API until Ctrl-C.
# Extra arguments go to `liangcao demo` (e.g. --no-serve, --home DIR, --port N).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/liangcao demo "$@"
