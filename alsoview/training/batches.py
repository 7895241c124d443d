"""How a run's mixed samples become training batches: the mixing spec of a config, rows per
batch, steps per epoch (the same on every worker), and the batches themselves.

The Ray Train worker (`distributed/train.py`) and the in-process feed (`local_epoch_blocks`,
`fit_in_process`, the benchmarks) both cut their epochs with a `BatchPlan`, so the two paths take
the same steps on the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from alsoview.config import Config
from alsoview.data.catalog import Catalog
from alsoview.sampling.blocks import MixSpec, block_sizes, mix_block, worker_blocks, worker_positives
from alsoview.training.losses import trains_in_groups


def mix_spec(config: Config) -> MixSpec:
    """What the run's draws depend on (`sampling.*`, the seed, and whether training is in groups)."""
    s = config.sampling
    return MixSpec(
        block_rows=s.block_rows,
        seed=config.seed,
        negatives=s.drawn_per_positive,
        also_view_fraction=s.also_view_fraction,
        warmup_epochs=s.also_view_warmup_epochs,
        random_pool=s.random_pool,
        popularity_exponent=s.popularity_exponent,
        grouped=trains_in_groups(config),
        exclude_related=s.exclude_related,
    )


def group_rows(config: Config) -> int:
    """Rows that must stay together in a batch: a positive and every negative drawn for it when
    training is in groups (`losses.trains_in_groups`), else one row."""
    return 1 + config.sampling.drawn_per_positive if trains_in_groups(config) else 1


def rows_per_batch(config: Config, world: int) -> int:
    """One worker's batch rows: train.batch_size / world, cut down to whole groups (group_rows).
    A group trains as 1 + k rows however many candidates it was drawn with, so `batch_size`
    counts trained rows: a batch holds batch_size / world / (1 + k) groups."""
    share = config.train.batch_size // world
    if not trains_in_groups(config):
        return max(1, share)
    s = config.sampling
    return max(1, share // (1 + s.negatives_per_positive)) * (1 + s.drawn_per_positive)


@dataclass(frozen=True)
class BatchPlan:
    """One worker's batches: its rows per batch, and the steps of each epoch, which every worker
    takes alike (the smallest share of positives decides) so the gradient exchanges stay in step."""

    block_sizes: np.ndarray
    seed: int
    world: int
    rows_per_batch: int
    samples_per_positive: int  # a positive and every negative drawn for it

    @classmethod
    def of(cls, config: Config, n_positives: int, world: int = 1) -> "BatchPlan":
        return cls(
            block_sizes=block_sizes(n_positives, config.sampling.block_rows),
            seed=config.seed,
            world=world,
            rows_per_batch=rows_per_batch(config, world),
            samples_per_positive=1 + config.sampling.drawn_per_positive,
        )

    def steps(self, epoch: int) -> int:
        """Optimiser steps of `epoch` on every worker."""
        shares = [worker_positives(self.block_sizes, self.seed, epoch, r, self.world) for r in range(self.world)]
        return int(math.ceil(min(shares) * self.samples_per_positive / self.rows_per_batch))


def fixed_size_batches(blocks: Iterable[dict[str, torch.Tensor]], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Cut a stream of column blocks into batches of exactly `batch_size` rows (the last may be
    shorter), carrying a block's remainder into the next one. Slices are views: no copies."""
    carry: dict[str, torch.Tensor] | None = None
    for block in blocks:
        if carry is not None:
            block = {name: torch.cat([carry[name], column]) for name, column in block.items()}
        rows = len(next(iter(block.values())))
        full = rows - rows % batch_size
        for start in range(0, full, batch_size):
            yield {name: column[start : start + batch_size] for name, column in block.items()}
        carry = {name: column[full:] for name, column in block.items()} if full < rows else None
    if carry is not None:
        yield carry


# What the training step takes from a mixed block's columns (ids widen to int64 for embeddings).
SAMPLE_DTYPES = {"user": torch.long, "item": torch.long, "label": torch.float32, "is_hard": torch.float32}


def sample_tensors(mixed: dict[str, Any], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A mixed block's numpy columns (`blocks.mix_block`) as training tensors on `device`; copies,
    so read-only columns from Ray's object store are fine."""
    return {name: torch.tensor(mixed[name], dtype=dtype, device=device) for name, dtype in SAMPLE_DTYPES.items()}


def local_epoch_blocks(catalog: Catalog, config: Config, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch's mixed blocks in this process, as one Ray Train worker of a one-worker run gets
    them (the same blocks, order and negatives): for the in-process path and the benchmarks."""
    spec = mix_spec(config)
    n_blocks = len(block_sizes(len(catalog.train), spec.block_rows))
    for block in worker_blocks(n_blocks, config.seed, epoch, 0, 1):
        yield sample_tensors(mix_block(int(block), catalog, spec, epoch))
