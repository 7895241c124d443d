"""Where a data-parallel training step goes: forward + backward, gradient sync, optimiser step.

    python benchmarks/worker_step.py                 # dense and sparse, 1 and 2 processes
    python benchmarks/worker_step.py --workers 1,2,4 --steps 300

No Ray and no data pipeline: N processes (gloo on loopback, one torch thread each) train the
Video-Games-scale model on epoch 0's batches at a global batch of 512 (512 / N rows each),
averaging gradients with `alsoview.training.gradient_sync.RowGradientSync` between backward and step,
as the Ray Train worker does. Rank 0's milliseconds per step are the mean over the steps after
50 warm-up steps; "sync" includes waiting for the slower rank. Also prints the gloo latency of
one tiny all-reduce, which bounds what any number of collectives per step can cost.
Writes benchmarks/results/worker_step.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from _common import ensure_vg_prepared, print_table, write_json

WARMUP = 50


def _worker(rank: int, world: int, sparse: bool, steps: int, prepared: str, store: str, out: str) -> None:
    import json

    import torch
    import torch.distributed as dist

    from alsoview.config import load_config
    from alsoview.data.catalog import load_catalog
    from alsoview.model import build_model
    from alsoview.training.batches import fixed_size_batches, local_epoch_blocks
    from alsoview.training.gradient_sync import RowGradientSync
    from alsoview.training.optim import build_optimizer

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    config = load_config(None, [f"data.prepared_dir={prepared}", f"model.sparse_embeddings={str(sparse).lower()}"])
    catalog = load_catalog(prepared)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(config.seed)
    model = build_model(catalog, config.model, config.seed)
    optimizer = build_optimizer(model, config.train.learning_rate, sparse)
    sync = RowGradientSync(model) if world > 1 else None
    batches = list(fixed_size_batches(local_epoch_blocks(catalog, config, 0), config.train.batch_size // world))
    batches = batches[rank::world][: WARMUP + steps]
    loss_fn = torch.nn.BCEWithLogitsLoss()
    parts = {"forward_backward": 0.0, "sync": 0.0, "optimiser": 0.0}
    for index, batch in enumerate(batches):
        if index == WARMUP:
            parts = dict.fromkeys(parts, 0.0)
            begin = time.perf_counter()
        start = time.perf_counter()
        loss = loss_fn(model(batch["user"], batch["item"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward_done = time.perf_counter()
        if sync is not None:
            sync()
        synced = time.perf_counter()
        optimizer.step()
        loss.item()
        parts["forward_backward"] += backward_done - start
        parts["sync"] += synced - backward_done
        parts["optimiser"] += time.perf_counter() - synced
    timed = len(batches) - WARMUP
    seconds = time.perf_counter() - begin
    latency_ms = None
    if world > 1:
        tiny = torch.zeros(1)
        for _ in range(20):
            dist.all_reduce(tiny)
        start = time.perf_counter()
        for _ in range(200):
            dist.all_reduce(tiny)
        latency_ms = (time.perf_counter() - start) / 200 * 1000
    if rank == 0:
        result = {
            "embeddings": "sparse" if sparse else "dense",
            "workers": world,
            "steps": timed,
            "ms_per_step": 1000 * seconds / timed,
            **{f"{name}_ms": 1000 * value / timed for name, value in parts.items()},
            "samples_per_s": timed * config.train.batch_size / seconds,
            "gradient_bytes_per_step": 0 if sync is None else sync.bytes_per_step,
            "all_reduce_bytes_per_step": 0 if sync is None else sync.all_reduce_bytes,
            "tiny_all_reduce_ms": latency_ms,
        }
        with open(out, "w") as f:
            json.dump(result, f)
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", help="a prepared dataset (default: the generated Video-Games-scale one)")
    parser.add_argument("--embeddings", default="dense,sparse")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--steps", type=int, default=250)
    args = parser.parse_args()

    import json

    import torch.multiprocessing as mp

    prepared = args.prepared or str(ensure_vg_prepared())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="alsoview-step-") as scratch:
        for mode in [m for m in args.embeddings.split(",") if m]:
            for world in [int(w) for w in args.workers.split(",") if w]:
                out = os.path.join(scratch, f"{mode}-{world}.json")
                store = os.path.join(scratch, f"{mode}-{world}.store")
                mp.spawn(_worker, args=(world, mode == "sparse", args.steps, prepared, store, out), nprocs=world)
                with open(out) as f:
                    rows.append(json.load(f))
                print(f"[bench] {mode} x{world}: {rows[-1]['samples_per_s']:,.0f} samples/s", flush=True)
    table = print_table(
        "Milliseconds per step at global batch 512 (rank 0)",
        rows,
        [
            "embeddings",
            "workers",
            "ms_per_step",
            "forward_backward_ms",
            "sync_ms",
            "optimiser_ms",
            "samples_per_s",
            "gradient_bytes_per_step",
            "all_reduce_bytes_per_step",
            "tiny_all_reduce_ms",
        ],
    )
    write_json(
        "worker_step",
        {
            "dataset": prepared,
            "rows": rows,
            "table": table,
            "command": f"python benchmarks/worker_step.py --embeddings {args.embeddings} --workers {args.workers} "
            f"--steps {args.steps}",
        },
    )


if __name__ == "__main__":
    main()
