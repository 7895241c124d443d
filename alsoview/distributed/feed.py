"""The epoch feed: one Ray Data pipeline per worker and run mixes the blocks `blocks.py` defines.

Pure numpy plus Ray Data, no torch: Ray Data's mixing tasks run in worker processes that import
this module, and a lighter import makes a fresh worker start faster. The catalog reaches every
process once, through the object store.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alsoview.data.catalog import Catalog
from alsoview.distributed.resources import EPOCHS_IN_FLIGHT, SAMPLE_BYTES
from alsoview.sampling.blocks import SAMPLE_COLUMNS, MixSpec, RunPlan, mix_block

_CATALOG_CACHE: dict[str, Catalog] = {}


def cached_catalog(ref_holder: list) -> Catalog:
    """One deserialisation of the shared catalog per process (its arrays are zero-copy views).

    The holder is a one-item list, so Ray passes the ObjectRef through instead of resolving it
    per task; it may hold the Catalog itself (unit tests, in-process use).
    """
    import ray

    ref = ref_holder[0]
    if isinstance(ref, Catalog):
        return ref
    key = ref.hex()
    if key not in _CATALOG_CACHE:
        _CATALOG_CACHE.clear()
        _CATALOG_CACHE[key] = ray.get(ref)
    return _CATALOG_CACHE[key]


def mix_blocks(batch: dict[str, np.ndarray], catalog_ref: list, spec: MixSpec, epoch: int) -> dict[str, np.ndarray]:
    """Ray Data UDF: a batch of block ids -> their mixed samples, block after block, as one output.

    One task mixes several blocks because a Ray Data task's scheduling costs far more than
    mixing one block, and it returns one output because each output is an object Ray must
    track (the measurements are in benchmarks/README.md). The positives come from the shared
    catalog.
    """
    catalog = cached_catalog(catalog_ref)
    parts = [mix_block(block, catalog, spec, epoch) for block in batch["block"].tolist()]
    return {name: np.concatenate([part[name] for part in parts]) for name in SAMPLE_COLUMNS}


def mix_planned(batch: dict[str, np.ndarray], catalog_ref: list, plan: RunPlan, spec: MixSpec) -> dict[str, np.ndarray]:
    """Ray Data UDF: one task index -> the mixed samples of its blocks for its epoch (see RunPlan)."""
    (index,) = batch["id"].tolist()
    epoch, blocks = plan.task(int(index))
    return mix_blocks({"block": blocks}, catalog_ref, spec, epoch)


def run_dataset(spec: MixSpec, cpus_per_task: float, catalog_ref: list, plan: RunPlan, udf: Any = None) -> Any:
    """The Ray Data pipeline of one worker for a whole run: task indices -> mixed samples, in
    order, every epoch of `plan` in one streaming execution. One execution keeps its executor
    and its mixing worker processes for the run: a pipeline per epoch started both afresh each
    epoch, which cost seconds per epoch (benchmarks/README.md).

    `udf` replaces :func:`mix_planned` with a function of the same signature (benchmarks wrap
    it to time the tasks)."""
    import ray.data

    if cpus_per_task is None:
        raise ValueError("sampling.cpus_per_task unset: plan the run first (resources.with_planned_split)")
    # from_items, not ray.data.range: a range is read by tasks of one CPU, more than training
    # leaves free; these input blocks are made here and need no task.
    tasks = [{"id": index} for index in range(plan.n_tasks)]
    return ray.data.from_items(tasks, override_num_blocks=max(1, plan.n_tasks)).map_batches(
        as_arrow_table,
        batch_size=1,
        batch_format="numpy",
        num_cpus=cpus_per_task,
        fn_kwargs={"udf": udf or mix_planned, "catalog_ref": catalog_ref, "plan": plan, "spec": spec},
    )


def as_arrow_table(batch: dict[str, np.ndarray], udf: Any, **kwargs: Any) -> Any:
    """`udf`'s column dict as a `pyarrow.Table` (a table passes through), which Ray Data keeps
    as the block as it is.

    Given a dict of numpy arrays, Ray Data infers each column's Arrow type with
    ``pyarrow.infer_type``, which walks every value: as long as the mixing itself
    (benchmarks/README.md, "Findings"). Arrow takes numpy's dtypes directly.
    """
    import pyarrow as pa

    out = udf(batch, **kwargs)
    return out if isinstance(out, pa.Table) else pa.table(out)


def block_columns(table: Any) -> dict[str, np.ndarray]:
    """A mixed block as `run_dataset` stores it (a `pyarrow.Table`) -> its numpy columns, the
    numeric ones without a copy."""
    return {name: table.column(name).to_numpy() for name in table.column_names}


class EpochFeeder:
    """Runs one worker's mixing pipeline for the whole run and hands it its samples epoch by epoch.

    Ray Data's streaming executor runs in the process that iterates a dataset. Inside a
    training worker its scheduling loop held the GIL in about 90% of py-spy's samples
    (benchmarks/README.md) and slowed the training steps by a third. This actor (no CPU of its
    own) iterates the pipeline instead: the mixing happens in parallel Ray Data tasks on the
    CPUs training leaves free, and the worker only reads finished blocks. The executor may run
    ahead by about one epoch of this worker's samples (`resource_limits`), so with the epoch
    being trained and the one handed over up to three epochs are alive (13 bytes a row; Ray
    spills to disk beyond its memory). The actor hands over references only: the samples go
    from the mixing task's output straight to the worker.
    """

    def __init__(
        self,
        spec: MixSpec,
        cpus_per_task: float,
        catalog_ref: list,
        plan: RunPlan,
        block_sizes: np.ndarray,
        udf: Any = None,
    ) -> None:
        import ray.data
        from ray.data import ExecutionResources

        from alsoview.logs import quiet_ray

        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # part of the seeded epoch
        # Ray Data counts a block against this limit until every reference to it is gone, the
        # training worker's included: the epoch it trains and the one handed to it count, so
        # the limit leaves room for one more (resources.EPOCHS_IN_FLIGHT). With room for only
        # those two, the executor ran one mixing task at a time (benchmarks/README.md).
        self.samples_per_positive = 1 + spec.negatives
        first = plan.epoch_rows(block_sizes, self.samples_per_positive, plan.first_epoch)
        context.execution_options.resource_limits = ExecutionResources(
            object_store_memory=max(EPOCHS_IN_FLIGHT * SAMPLE_BYTES * first, 64 * 2**20)
        )
        quiet_ray()
        self.plan, self.block_sizes = plan, block_sizes
        self.next_epoch = plan.first_epoch
        dataset = run_dataset(spec, cpus_per_task, catalog_ref, plan, udf)  # udf: benchmarks time the tasks
        # References to the blocks as the mixing tasks stored them: this actor never reads or
        # copies samples, the training worker fetches each block once (`block_columns`).
        self._bundles = dataset.iter_internal_ref_bundles()

    def epoch(self, epoch: int) -> list:
        """Object refs of this worker's mixed blocks of `epoch` (Arrow tables, in order; read them
        with `block_columns`); epochs must be asked for in order, each once."""
        if epoch != self.next_epoch:
            raise RuntimeError(f"the feed is at epoch {self.next_epoch}, asked for epoch {epoch}")
        wanted = self.plan.epoch_rows(self.block_sizes, self.samples_per_positive, epoch)
        refs, rows = [], 0
        while rows < wanted:
            bundle = next(self._bundles, None)
            if bundle is None:
                raise RuntimeError(f"the mixing pipeline ended {wanted - rows} samples short of epoch {epoch}")
            if any(piece is not None for piece in bundle.slices or ()):
                raise RuntimeError(f"the mixing pipeline handed over part of a block in epoch {epoch}")
            refs.extend(bundle.block_refs)
            rows += bundle.num_rows()
        if rows != wanted:  # a block crossed an epoch boundary: the plan and the pipeline disagree
            raise RuntimeError(f"epoch {epoch} got {rows} mixed samples, expected {wanted}")
        self.next_epoch += 1
        return refs
