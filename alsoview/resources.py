"""What a training run may ask of the cluster, checked before anything starts.

One rule serves `alsoview train` and each Tune trial (which plans with its share of the
cluster): training workers take the CPUs (or GPUs), Ray Data's mixing tasks need CPUs left
over, and an epoch of mixed samples must fit the memory it passes through. A run that breaks
the rule is refused in one line naming the limit, instead of waiting forever for resources
that never come or being killed for memory halfway through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alsoview.config import Config
from alsoview.errors import UserError

# Each CPU training worker has its own Ray Data pipeline (feed.EpochFeeder), and they share the
# CPUs training leaves free. On 2 CPUs, 3 workers of 0.5 CPU trained; 8 workers of 0.19 hung
# for good with Ray Data's "Cluster resources are not enough to run any task" (measured here).
MIN_CPUS_PER_WORKER = 0.5
# Bytes per mixed sample: the 13 of its columns (int32 user and item, float32 label, uint8 hard
# flag) as stored in the object store, and the peak of a mixing task per sample it outputs:
# 58-69 bytes in `feed.mix_block` (tracemalloc, k = 1..256 on the generated data) plus the 13
# copied again when the task concatenates its blocks; 100 leaves room.
SAMPLE_BYTES = 13
MIX_TASK_PEAK_BYTES = 100
# Mixed epochs alive at once per worker: the one training reads, the one handed over next and
# what the feed's executor may mix ahead (limited to about one epoch: feed.EpochFeeder).
EPOCHS_IN_FLIGHT = 3


@dataclass(frozen=True)
class WorkerResources:
    use_gpu: bool
    cpus_per_worker: float
    torch_threads: int


def resolve_resources(config: Config, cluster: dict[str, float]) -> WorkerResources:
    """GPU or not, CPUs and torch threads per worker for `cluster` (or a trial's share of it),
    leaving Ray Data its share of the CPUs."""
    workers = config.train.num_workers
    gpus = cluster.get("GPU", 0)
    use_gpu = gpus > 0 if config.train.use_gpu == "auto" else bool(config.train.use_gpu)
    if use_gpu and gpus < workers:
        raise UserError(f"train.use_gpu needs {workers} GPUs, the cluster has {gpus:g}")
    cpus = cluster.get("CPU", 1)
    for_data = config.sampling.cpus_per_task
    per_worker = config.train.cpus_per_worker
    if per_worker is None:
        spare_for_data = max(for_data, 0.25 * cpus)
        share = (cpus - spare_for_data) / workers
        per_worker = min(1.0, share) if use_gpu else share
    if per_worker * workers + for_data > cpus + 1e-9:
        raise UserError(
            f"{workers} workers x {per_worker:g} CPUs + {for_data:g} for Ray Data exceed the cluster's {cpus:g} CPUs"
        )
    if not use_gpu and per_worker < MIN_CPUS_PER_WORKER:
        fit = max(0, math.floor((cpus - for_data) / MIN_CPUS_PER_WORKER))
        raise UserError(
            f"train.num_workers={workers} on {cpus:g} CPUs leaves {per_worker:.2g} CPUs per worker "
            f"(at least {MIN_CPUS_PER_WORKER:g} each, and {for_data:g} kept for Ray Data's mixing); "
            f"use at most {fit} workers here, or a bigger cluster"
        )
    if per_worker <= 0:
        raise UserError(f"the cluster's {cpus:g} CPUs leave nothing for {workers} workers")
    return WorkerResources(use_gpu, round(per_worker, 3), max(1, int(per_worker)))


def sharing_cores_warning(config: Config, resources: WorkerResources) -> str | None:
    """Why adding CPU workers will not speed training up here, when it will not: workers with less
    than one CPU each share cores, so they split the same compute and add gradient exchange."""
    workers = config.train.num_workers
    if resources.use_gpu or workers == 1 or resources.cpus_per_worker >= 1:
        return None
    return (
        f"train.num_workers={workers} gets {resources.cpus_per_worker:g} CPUs per worker: the workers share "
        f"cores, so expect no speed-up over {max(1, math.floor(workers * resources.cpus_per_worker))} "
        f"worker(s) (they split the same CPUs and exchange gradients each step); add workers on more CPUs or GPUs"
    )


def check_sample_memory(config: Config, n_positives: int, cluster: dict[str, float], cpus_per_worker: float) -> None:
    """Refuse settings whose mixed samples cannot fit: a mixing task's peak in the memory its
    CPUs come with, or the epochs in flight in the object store plus Ray's spill space."""
    s = config.sampling
    per_positive = 1 + s.negatives_per_positive
    task_rows = s.block_rows * s.blocks_per_task * per_positive
    spare_cpus = max(cluster.get("CPU", 1) - cpus_per_worker * config.train.num_workers, s.cpus_per_task)
    tasks_at_once = max(1, math.floor(spare_cpus / s.cpus_per_task))
    memory = cluster.get("memory", 0)
    task_peak = task_rows * MIX_TASK_PEAK_BYTES
    if memory and task_peak * tasks_at_once > memory:
        raise UserError(
            f"sampling.negatives_per_positive={s.negatives_per_positive}: one mixing task of "
            f"{s.blocks_per_task} blocks x {s.block_rows} positives makes {task_rows:,} samples "
            f"(about {_gib(task_peak)} at its peak, {tasks_at_once} tasks at once), more than the "
            f"cluster's {_gib(memory)} of memory; lower sampling.blocks_per_task or sampling.block_rows, "
            f"or the negatives per positive"
        )
    epoch_bytes = n_positives * per_positive * SAMPLE_BYTES * EPOCHS_IN_FLIGHT
    room = cluster.get("object_store_memory", 0) + memory
    if room and epoch_bytes > room:
        raise UserError(
            f"sampling.negatives_per_positive={s.negatives_per_positive}: {n_positives:,} positives "
            f"make {n_positives * per_positive:,} samples an epoch; with {EPOCHS_IN_FLIGHT} epochs in "
            f"flight that is {_gib(epoch_bytes)}, more than the cluster's object store and memory "
            f"({_gib(room)}) could hold even by spilling for long; lower the negatives per positive"
        )


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"
