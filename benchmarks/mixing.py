"""Negative mixing throughput: the Ray Data stage beside the same pure function in one process and
a naive per-row Python sampler, on the generated Video-Games-scale dataset (k=4, f=0.5).

    python benchmarks/mixing.py
    python benchmarks/mixing.py --epochs 5 --naive-positives 20000

- naive: a per-row loop (``random.sample`` from the also-view list minus the user's items, then
  rejection draws for random items against a Python set), on the first ``--naive-positives``;
- pure, one process: ``blocks.mix_block`` over every block of an epoch (block_rows positives
  each, as training uses), one after the other;
- Ray Data: epochs taken back to back from a ``feed.EpochFeeder`` (one streaming execution of
  ``feed.run_dataset`` for all epochs, as a one-worker training run uses it; tasks of
  ``sampling.blocks_per_task`` blocks, ``sampling.cpus_per_task`` CPUs each), the median of the
  epochs after the first. "End to end" is the wall time of the whole epoch
  (executor start, worker processes, object store) over the cores Ray has; "per CPU-second" is
  the negatives over the CPU time the tasks spent in the mixing function (``time.process_time``).

Negatives counted are the rows with label 0. Writes benchmarks/results/mixing.json.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from typing import Any

from _common import ensure_vg_prepared, median, print_table, ray_local, write_json


def naive_sampler(catalog: Any, n_positives: int, k: int, fraction: float, seed: int) -> int:
    """The obvious Python loop; returns the number of negatives drawn."""
    rng = random.Random(seed)
    tables = catalog.sampling
    indptr, indices = tables.also_view_indptr, tables.also_view_indices
    u_indptr, u_indices = tables.user_items_indptr, tables.user_items_indices
    n_items = tables.n_items
    drawn = 0
    for user, item in zip(catalog.train.users[:n_positives].tolist(), catalog.train.items[:n_positives].tolist()):
        seen = set(u_indices[u_indptr[user] : u_indptr[user + 1]].tolist())
        hard_wanted = int(k * fraction) + (rng.random() < (k * fraction) % 1)
        candidates = [i for i in indices[indptr[item] : indptr[item + 1]].tolist() if i not in seen]
        negatives = rng.sample(candidates, min(hard_wanted, len(candidates)))
        while len(negatives) < k:
            candidate = rng.randrange(1, n_items)
            if candidate not in seen:
                negatives.append(candidate)
        drawn += len(negatives)
    return drawn


def pure_epoch(catalog: Any, config: Any, epoch: int) -> tuple[int, float]:
    from alsoview.sampling.blocks import block_sizes, mix_block
    from alsoview.training.batches import mix_spec

    s = config.sampling
    begin = time.perf_counter()
    negatives = 0
    for block in range(len(block_sizes(len(catalog.train), s.block_rows))):
        negatives += int((mix_block(block, catalog, mix_spec(config), epoch)["label"] == 0).sum())
    return negatives, time.perf_counter() - begin


def timed_mix_planned(batch: dict, catalog_ref: list, plan: Any, spec: Any) -> Any:
    """feed.mix_planned as an Arrow table whose schema metadata holds the task's CPU seconds (a
    column would add bytes to every sample and change what the feed holds)."""
    import pyarrow as pa

    from alsoview.distributed.feed import mix_planned

    begin = time.process_time()
    table = pa.table(mix_planned(batch, catalog_ref, plan, spec))
    return table.replace_schema_metadata({"task_cpu_seconds": repr(time.process_time() - begin)})


def ray_epochs(catalog_ref: list, config: Any, catalog: Any, epochs: int) -> list[tuple[int, float, float]]:
    """Per epoch (negatives, wall seconds, CPU seconds inside the mixing tasks), taken back to back
    from one `feed.EpochFeeder` actor, as a one-worker training run takes them."""
    import ray

    from alsoview.distributed.feed import EpochFeeder, block_columns
    from alsoview.sampling.blocks import RunPlan, block_sizes
    from alsoview.training.batches import mix_spec

    sizes = block_sizes(len(catalog.train), config.sampling.block_rows)
    plan = RunPlan(len(sizes), 0, 1, config.seed, 0, epochs, config.sampling.blocks_per_task)
    spec, cpus = mix_spec(config), config.sampling.cpus_per_task
    feeder = ray.remote(num_cpus=0)(EpochFeeder).remote(spec, cpus, catalog_ref, plan, sizes, timed_mix_planned)
    out = []
    try:
        for epoch in range(epochs):
            begin = time.perf_counter()
            refs = ray.get(feeder.epoch.remote(epoch))
            tables = ray.get(refs)
            blocks = [block_columns(table) for table in tables]  # in this process, as training reads them
            seconds = time.perf_counter() - begin
            negatives = sum(int((b["label"] == 0).sum()) for b in blocks)
            cpu = sum(float(table.schema.metadata[b"task_cpu_seconds"]) for table in tables)
            out.append((negatives, seconds, cpu))
    finally:
        ray.kill(feeder)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", help="a prepared dataset (default: the generated Video-Games-scale one)")
    parser.add_argument("--epochs", type=int, default=4, help="Ray Data epochs (the first warms the workers up)")
    parser.add_argument("--naive-positives", type=int, default=20_000)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. sampling.block_rows=4096")
    args = parser.parse_args()

    import ray

    from alsoview.config import load_config
    from alsoview.data.catalog import load_catalog
    from alsoview.distributed.resources import plan_resources, with_planned_split
    from alsoview.sampling.blocks import block_sizes

    prepared = args.prepared or str(ensure_vg_prepared())
    config = load_config(None, [f"data.prepared_dir={prepared}", *args.overrides])
    # the split a one-worker `alsoview train` on this machine gets
    config = with_planned_split(config, plan_resources(config, {"CPU": float(os.cpu_count() or 1)}, "train"))
    s = config.sampling
    catalog = load_catalog(prepared)
    n_blocks = len(block_sizes(len(catalog.train), s.block_rows))
    cores = os.cpu_count() or 1
    print(
        f"[bench] {len(catalog.train):,} positives in {n_blocks} blocks of {s.block_rows}; "
        f"k={s.negatives_per_positive}, "
        f"f={s.also_view_fraction}; {cores} cores",
        flush=True,
    )
    rows: list[dict[str, Any]] = []

    begin = time.perf_counter()
    drawn = naive_sampler(catalog, args.naive_positives, s.negatives_per_positive, s.also_view_fraction, config.seed)
    seconds = time.perf_counter() - begin
    rows.append(
        {
            "sampler": "naive per-row Python",
            "cores": 1,
            "negatives": drawn,
            "seconds": seconds,
            "negatives_per_s": drawn / seconds,
            "per_core": drawn / seconds,
        }
    )

    results = [pure_epoch(catalog, config, epoch) for epoch in range(2)]
    negatives, seconds = results[-1]
    rows.append(
        {
            "sampler": "pure mix_block, one process",
            "cores": 1,
            "negatives": negatives,
            "seconds": seconds,
            "negatives_per_s": negatives / seconds,
            "per_core": negatives / seconds,
        }
    )

    ray_local()
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    catalog_ref = [ray.put(catalog)]
    epochs = ray_epochs(catalog_ref, config, catalog, args.epochs)
    timed = epochs[1:] or epochs
    seconds = median([t for _, t, _ in timed])
    cpu_seconds = median([c for _, _, c in timed])
    negatives = timed[0][0]
    ray_cores = ray.cluster_resources().get("CPU", cores)
    label = f"{s.blocks_per_task} blocks/task, {s.cpus_per_task:g} CPU/task"
    rows.append(
        {
            "sampler": f"Ray Data epoch, end to end ({label})",
            "cores": ray_cores,
            "negatives": negatives,
            "seconds": seconds,
            "negatives_per_s": negatives / seconds,
            "per_core": negatives / seconds / ray_cores,
        }
    )
    rows.append(
        {
            "sampler": "Ray Data mixing tasks, per CPU-second inside the tasks",
            "cores": "-",
            "negatives": negatives,
            "seconds": cpu_seconds,
            "negatives_per_s": None,
            "per_core": negatives / cpu_seconds,
        }
    )
    for row in rows:
        print(f"[bench] {row['sampler']}: {row['per_core']:,.0f} negatives/s per core", flush=True)

    table = print_table(
        "Negative mixing (k=%d, f=%g)" % (s.negatives_per_positive, s.also_view_fraction),
        rows,
        ["sampler", "cores", "negatives", "seconds", "negatives_per_s", "per_core"],
    )
    write_json(
        "mixing",
        {
            "dataset": prepared,
            "overrides": args.overrides,
            "rows": rows,
            "table": table,
            "ray_epoch_seconds": [t for _, t, _ in epochs],
            "ray_task_cpu_seconds": [c for _, _, c in epochs],
            "command": "python benchmarks/mixing.py " + " ".join(args.overrides),
        },
    )


if __name__ == "__main__":
    main()
