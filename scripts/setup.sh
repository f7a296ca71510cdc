#!/usr/bin/env bash
# Creates .venv (if missing) and installs liangcao into it. Usage: scripts/setup.sh [extras]
# Everything the project needs comes from here: nothing is expected to be installed by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
