"""The epoch feed: training positives -> mixed samples, as a Ray Data pipeline per worker and epoch.

Pure numpy plus Ray Data, no torch: Ray Data's mixing tasks run in worker processes that import
this module, and a lighter import makes a fresh worker start faster.

The training positives are cut into fixed blocks of ``sampling.block_rows``; each epoch deals
them to the workers by a seeded permutation, and each block's negatives are seeded by
(seed, epoch, block). An epoch's samples therefore do not depend on the number of workers or
on how many blocks one task mixes; the catalog reaches every process once, through the object
store.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from alsoview.catalog import Catalog
from alsoview.config import Config
from alsoview.sampling import epoch_rng, mix_negatives

SAMPLE_COLUMNS = ("user", "item", "label", "is_hard")
# epoch_rng key of the per-epoch permutation of blocks (block ids are far below it)
EPOCH_ORDER_KEY = 2**40


def block_sizes(n_positives: int, block_rows: int) -> np.ndarray:
    """Rows of each fixed block of training positives; block b covers [b * block_rows, ...)."""
    full, rest = divmod(n_positives, block_rows)
    return np.array([block_rows] * full + ([rest] if rest else []), dtype=np.int64)


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


def mix_block(
    block: int,
    catalog: Catalog,
    block_rows: int,
    seed: int,
    epoch: int,
    negatives_per_positive: int,
    also_view_fraction: float,
    random_pool: str,
    popularity_exponent: float,
) -> dict[str, np.ndarray]:
    """One block's positives plus fresh negatives, rows shuffled; the block id seeds the draw."""
    rows = slice(block * block_rows, (block + 1) * block_rows)
    rng = epoch_rng(seed, epoch, block)
    columns, _ = mix_negatives(
        catalog.train.users[rows],
        catalog.train.items[rows],
        catalog.sampling,
        negatives_per_positive=negatives_per_positive,
        also_view_fraction=also_view_fraction,
        rng=rng,
        random_pool=random_pool,
        popularity_exponent=popularity_exponent,
    )
    order = rng.permutation(len(columns["label"]))
    out = {name: columns[name][order] for name in SAMPLE_COLUMNS}
    # int32 ids halve what an epoch of samples takes in the object store (training casts back)
    out["user"], out["item"] = out["user"].astype(np.int32), out["item"].astype(np.int32)
    return out


def mix_blocks(batch: dict[str, np.ndarray], catalog_ref: list, **mix_args: Any) -> dict[str, np.ndarray]:
    """Ray Data UDF: a batch of block ids -> their mixed samples, block after block, as one output.

    One task mixes several blocks because a Ray Data task's scheduling costs far more than
    mixing one block, and it returns one output because each output is an object Ray must
    track (the measurements are in benchmarks/README.md). The positives come from the shared
    catalog.
    """
    catalog = cached_catalog(catalog_ref)
    parts = [mix_block(block, catalog, **mix_args) for block in batch["block"].tolist()]
    return {name: np.concatenate([part[name] for part in parts]) for name in SAMPLE_COLUMNS}


def worker_blocks(n_blocks: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This worker's blocks for the epoch: a seeded permutation dealt round-robin."""
    order = epoch_rng(seed, epoch, EPOCH_ORDER_KEY).permutation(n_blocks)
    return order[rank::world]


def steps_per_epoch(
    block_sizes: np.ndarray, seed: int, epoch: int, world: int, samples_per_positive: int, worker_batch: int
) -> int:
    """Batches every worker runs this epoch: the smallest share decides, so the gradient exchanges stay in step."""
    shares = [block_sizes[worker_blocks(len(block_sizes), seed, epoch, r, world)].sum() for r in range(world)]
    return int(math.ceil(min(shares) * samples_per_positive / worker_batch))


def epoch_dataset(blocks: np.ndarray, config: Config, catalog_ref: list, epoch: int, udf: Any = None) -> Any:
    """The Ray Data pipeline of one worker for one epoch: its block ids -> mixed samples.

    `udf` replaces :func:`mix_blocks` with a function of the same signature (benchmarks wrap
    it to time the tasks)."""
    import ray.data

    sampling = config.sampling
    per_task = sampling.blocks_per_task
    return ray.data.from_items(
        [{"block": int(b)} for b in blocks], override_num_blocks=max(1, math.ceil(len(blocks) / per_task))
    ).map_batches(
        udf or mix_blocks,
        batch_size=per_task,
        batch_format="numpy",
        num_cpus=sampling.cpus_per_task,
        fn_kwargs={"catalog_ref": catalog_ref, **mix_arguments(config, epoch)},
    )


def mix_arguments(config: Config, epoch: int) -> dict[str, Any]:
    """The keyword arguments of :func:`mix_block` (after the block and catalog) for `epoch`."""
    s = config.sampling
    return {
        "block_rows": s.block_rows,
        "seed": config.seed,
        "epoch": epoch,
        "negatives_per_positive": s.negatives_per_positive,
        "also_view_fraction": s.also_view_fraction,
        "random_pool": s.random_pool,
        "popularity_exponent": s.popularity_exponent,
    }


class EpochFeeder:
    """Materialises one worker's epochs with Ray Data, one epoch ahead of its training loop.

    Ray Data's streaming executor runs in the process that iterates a dataset. Inside a
    training worker its scheduling loop held the GIL in about 90% of py-spy's samples
    (benchmarks/README.md) and slowed the training steps by a third. This actor (no CPU of its
    own) runs the pipeline instead: the mixing still happens in parallel Ray Data tasks on the
    CPUs training leaves free, the worker only reads finished blocks, and the actor owns them
    for as long as the run needs them. Cost: up to two epochs of this worker's samples in the
    object store (13 bytes a row; Ray spills to disk beyond its memory).
    """

    def __init__(self, config: Config, catalog_ref: list, n_blocks: int, rank: int, world: int) -> None:
        import ray.data

        from alsoview.logs import quiet_ray

        ray.data.DataContext.get_current().execution_options.preserve_order = True  # part of the seeded epoch
        quiet_ray()
        self.config, self.catalog_ref = config, catalog_ref
        self.n_blocks, self.rank, self.world = n_blocks, rank, world

    def materialize(self, epoch: int) -> Any:
        """This worker's mixed samples of `epoch`, as a MaterializedDataset (its blocks in order)."""
        blocks = worker_blocks(self.n_blocks, self.config.seed, epoch, self.rank, self.world)
        return epoch_dataset(blocks, self.config, self.catalog_ref, epoch).materialize()
