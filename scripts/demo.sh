#!/usr/bin/env bash
# The main job: install liangcao and run the demo on embedded defaults. Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/quickstart.py "$@"
