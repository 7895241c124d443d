#!/usr/bin/env bash
# Install, lint, check the layers, then run the test suite (one local Ray instance, loopback only).
# Arguments go to pytest: `bash scripts/test.sh -m "not ray"` is the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports  # ARCHITECTURE.md's layers (contracts in pyproject.toml)
exec .venv/bin/python -m pytest -q "$@"
