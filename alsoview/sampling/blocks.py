"""An epoch's samples, defined without Ray: which training positives form each block, which
worker gets which blocks, and each block's negatives.

The training positives are cut into fixed blocks of ``sampling.block_rows``; each epoch deals
them to the workers by a seeded permutation, and each block's negatives are seeded by
(seed, epoch, block). An epoch's samples therefore do not depend on the number of workers or
on how many blocks one Ray Data task mixes (`distributed/feed.py` runs these functions in its
tasks; the in-process feed and the benchmarks call them directly).

Pure numpy, no torch and no config: Ray Data's mixing tasks import it, and a lighter import makes
a fresh worker start faster. What a run's draws depend on travels as one `MixSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alsoview.data.catalog import Catalog
from alsoview.sampling.mixing import mix_negatives
from alsoview.sampling.stats import MixStats
from alsoview.seeds import BLOCK_ORDER_KEY, epoch_rng

SAMPLE_COLUMNS = ("user", "item", "label", "is_hard")


@dataclass(frozen=True)
class MixSpec:
    """Everything a run's draw of a block depends on besides the block and the epoch."""

    block_rows: int  # positives per block
    seed: int
    negatives: int  # drawn per positive: every candidate of every negative
    also_view_fraction: float  # the share asked for once the warm-up is over
    warmup_epochs: int  # the share rises linearly from 0 over these epochs (0: none)
    random_pool: str
    popularity_exponent: float
    grouped: bool  # rows in groups of a positive and its negatives (training in groups)
    exclude_related: bool  # no negative is an also-view neighbour of the user's other training items

    def fraction(self, epoch: int) -> float:
        """The also-view share asked for in `epoch` (epoch 0 of a warm-up draws none)."""
        if self.warmup_epochs == 0:
            return self.also_view_fraction
        return self.also_view_fraction * min(1.0, epoch / self.warmup_epochs)


def block_sizes(n_positives: int, block_rows: int) -> np.ndarray:
    """Rows of each fixed block of training positives; block b covers [b * block_rows, ...)."""
    full, rest = divmod(n_positives, block_rows)
    return np.array([block_rows] * full + ([rest] if rest else []), dtype=np.int64)


def mix_block(block: int, catalog: Catalog, spec: MixSpec, epoch: int) -> dict[str, np.ndarray]:
    """One block's positives plus fresh negatives; (seed, epoch, block) seeds the draw. Rows
    shuffled, or with `spec.grouped` positives shuffled, each followed by its negatives, so a
    batch of whole groups holds every positive's own."""
    rng = epoch_rng(spec.seed, epoch, block)
    columns, _ = _draw_block(block, catalog, spec, epoch, rng)
    if spec.grouped:
        positives = len(columns["label"]) // (1 + spec.negatives)
        order = _group_order(rng.permutation(positives), spec.negatives)
    else:
        order = rng.permutation(len(columns["label"]))
    out = {name: columns[name][order] for name in SAMPLE_COLUMNS}
    # int32 ids halve what an epoch of samples takes in the object store (training casts back)
    out["user"], out["item"] = out["user"].astype(np.int32), out["item"].astype(np.int32)
    return out


def _draw_block(
    block: int, catalog: Catalog, spec: MixSpec, epoch: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], MixStats]:
    """`mix_negatives` on block `block`'s positives (mix_block's draw, and what preview_mix counts)."""
    rows = slice(block * spec.block_rows, (block + 1) * spec.block_rows)
    return mix_negatives(
        catalog.train.users[rows],
        catalog.train.items[rows],
        catalog.sampling,
        negatives_per_positive=spec.negatives,
        also_view_fraction=spec.fraction(epoch),
        rng=rng,
        random_pool=spec.random_pool,
        popularity_exponent=spec.popularity_exponent,
        related=catalog.train_relations("also_view") if spec.exclude_related else None,
    )


def _group_order(positives: np.ndarray, k: int) -> np.ndarray:
    """Row order [p, its k negatives] for each positive p in the given order (mix_negatives puts
    positive p's negatives at rows B + p*k .. B + p*k + k - 1)."""
    order = np.empty((len(positives), 1 + k), dtype=np.int64)
    order[:, 0] = positives
    order[:, 1:] = len(positives) + positives[:, None] * k + np.arange(k)
    return order.ravel()


def preview_mix(catalog: Catalog, spec: MixSpec, max_blocks: int = 8) -> MixStats:
    """What the first blocks of the first epoch at the full share draw (epoch 0, or the end of
    the warm-up; the same draws as training): the realised also-view share can fall short of
    the asked one where items' also-view lists are short or hold the user's own items, and the
    shortfall comes from the random pool. Told to the user before training
    (`MixStats.describe`), so a searched fraction is read as what it buys on their data."""
    sizes = block_sizes(len(catalog.train), spec.block_rows)
    epoch = spec.warmup_epochs
    total = MixStats()
    for block in range(min(max_blocks, len(sizes))):
        _, stats = _draw_block(block, catalog, spec, epoch, epoch_rng(spec.seed, epoch, block))
        total = total.merge(stats)
    return total


def worker_blocks(n_blocks: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This worker's blocks for the epoch: a seeded permutation dealt round-robin."""
    order = epoch_rng(seed, epoch, BLOCK_ORDER_KEY).permutation(n_blocks)
    return order[rank::world]


def worker_positives(block_sizes: np.ndarray, seed: int, epoch: int, rank: int, world: int) -> int:
    """Training positives in worker `rank`'s blocks of `epoch`."""
    return int(block_sizes[worker_blocks(len(block_sizes), seed, epoch, rank, world)].sum())


@dataclass(frozen=True)
class RunPlan:
    """Which blocks each mixing task of one worker's run mixes: tasks go epoch after epoch, each
    taking the next `blocks_per_task` of that epoch's blocks for this worker (`worker_blocks`).

    Every epoch has the same number of tasks (a worker's share of the blocks has a fixed size),
    so a task's index alone says its epoch and blocks, and a task can work them out itself.
    """

    n_blocks: int
    rank: int
    world: int
    seed: int
    first_epoch: int
    epochs: int  # epochs first_epoch .. epochs - 1
    blocks_per_task: int

    @property
    def tasks_per_epoch(self) -> int:
        share = len(range(self.rank, self.n_blocks, self.world))
        return max(1, math.ceil(share / self.blocks_per_task))

    @property
    def n_tasks(self) -> int:
        return self.tasks_per_epoch * max(0, self.epochs - self.first_epoch)

    def task(self, index: int) -> tuple[int, np.ndarray]:
        """(epoch, block ids) of task `index`."""
        epoch = self.first_epoch + index // self.tasks_per_epoch
        start = (index % self.tasks_per_epoch) * self.blocks_per_task
        blocks = worker_blocks(self.n_blocks, self.seed, epoch, self.rank, self.world)
        return epoch, blocks[start : start + self.blocks_per_task]

    def epoch_rows(self, block_sizes: np.ndarray, samples_per_positive: int, epoch: int) -> int:
        """Mixed samples of one epoch of this worker: every positive of its blocks with its negatives."""
        return worker_positives(block_sizes, self.seed, epoch, self.rank, self.world) * samples_per_positive
