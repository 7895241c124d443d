#!/usr/bin/env bash
# Install, then run the main job on the embedded default dataset (generated on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python rayjobs/tune.py "$@"
