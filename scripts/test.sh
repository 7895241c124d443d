#!/usr/bin/env bash
# Install, lint, then run the whole test suite (one local Ray instance, loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q "$@"
