#!/usr/bin/env bash
# The training benchmark on a machine with a GPU: samples/s on the GPU beside the CPU, for the
# plain loop and the pipeline (Ray Data feed + TorchTrainer with use_gpu). Never run by tests.
#
#   bash benchmarks/gpu.sh            # about 6 minutes on a 16-core machine with one GPU
#
# Needs an environment with a CUDA build of torch and alsoview installed (pip install -e .);
# the generated Video-Games-scale dataset is made on first use (about 1 minute) under data/bench/.
# Writes benchmarks/results/training-gpu.json and evaluation.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "benchmarks/gpu.sh: torch in $("$PYTHON" -c 'import sys; print(sys.prefix)') sees no CUDA device" >&2
    exit 2
fi
"$PYTHON" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
# 1 GPU worker, and one per GPU when there are several (NCCL; gradients through
# alsoview.training.gradient_sync); dense (the GPU's natural mode) and sparse; 2 epochs per pipeline run (1 timed).
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
WORKERS=1
if [ "$GPUS" -gt 1 ]; then WORKERS="1,$GPUS"; fi
"$PYTHON" benchmarks/training.py --gpu --embeddings dense,sparse --workers "$WORKERS" --epochs 2 "$@"
# Full-ranking scoring on the GPU: pair by pair against the shortcut (benchmarks/evaluation.py).
"$PYTHON" benchmarks/evaluation.py --device cuda --users 5000 --pair-users 500
