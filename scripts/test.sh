#!/usr/bin/env bash
# Install, then run the whole test suite (one local Ray instance, loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
