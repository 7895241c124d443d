"""An epoch's samples, defined without Ray: which training positives form each block, which
worker gets which blocks, and each block's negatives.

The training positives are cut into fixed blocks of ``sampling.block_rows``; each epoch deals
them to the workers by a seeded permutation, and each block's negatives are seeded by
(seed, epoch, block). An epoch's samples therefore do not depend on the number of workers or
on how many blocks one Ray Data task mixes (`feed.py` runs these functions in its tasks; the
in-process loop and the benchmarks call them directly).

Pure numpy, no torch: Ray Data's mixing tasks import it, and a lighter import makes a fresh
worker start faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from alsoview.config import Config
from alsoview.data.catalog import Catalog
from alsoview.data.relations import UserRelations, user_item_csr
from alsoview.sampling.mixing import MixStats, epoch_rng, mix_negatives

SAMPLE_COLUMNS = ("user", "item", "label", "is_hard")
# epoch_rng key of the per-epoch permutation of blocks (block ids are far below it)
EPOCH_ORDER_KEY = 2**40


def block_sizes(n_positives: int, block_rows: int) -> np.ndarray:
    """Rows of each fixed block of training positives; block b covers [b * block_rows, ...)."""
    full, rest = divmod(n_positives, block_rows)
    return np.array([block_rows] * full + ([rest] if rest else []), dtype=np.int64)


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
    grouped: bool = False,
    exclude_related: bool = False,
) -> dict[str, np.ndarray]:
    """One block's positives plus fresh negatives; the block id seeds the draw. Rows shuffled,
    or with `grouped` (training in groups: `trains_in_groups`) positives shuffled, each followed by its
    `negatives_per_positive` negatives, so a batch of whole groups holds every positive's own.
    `exclude_related`: no negative is an also-view neighbour of the user's other training items."""
    rng = epoch_rng(seed, epoch, block)
    columns, _ = _draw_block(
        block,
        catalog,
        block_rows,
        negatives_per_positive,
        also_view_fraction,
        random_pool,
        popularity_exponent,
        rng,
        user_relations(catalog) if exclude_related else None,
    )
    if grouped:
        positives = len(columns["label"]) // (1 + negatives_per_positive)
        order = _group_order(rng.permutation(positives), negatives_per_positive)
    else:
        order = rng.permutation(len(columns["label"]))
    out = {name: columns[name][order] for name in SAMPLE_COLUMNS}
    # int32 ids halve what an epoch of samples takes in the object store (training casts back)
    out["user"], out["item"] = out["user"].astype(np.int32), out["item"].astype(np.int32)
    return out


def _draw_block(
    block: int,
    catalog: Catalog,
    block_rows: int,
    negatives_per_positive: int,
    also_view_fraction: float,
    random_pool: str,
    popularity_exponent: float,
    rng: np.random.Generator,
    related: UserRelations | None = None,
) -> tuple[dict[str, np.ndarray], MixStats]:
    """`mix_negatives` on block `block`'s positives (mix_block's draw, and what preview_mix counts)."""
    rows = slice(block * block_rows, (block + 1) * block_rows)
    return mix_negatives(
        catalog.train.users[rows],
        catalog.train.items[rows],
        catalog.sampling,
        negatives_per_positive=negatives_per_positive,
        also_view_fraction=also_view_fraction,
        rng=rng,
        random_pool=random_pool,
        popularity_exponent=popularity_exponent,
        related=related,
    )


# One UserRelations per process, for the catalog it was built from (mixing tasks share one
# catalog per process: feed.cached_catalog); the catalog is held so its id stays its own.
_RELATIONS: dict[int, tuple[Catalog, UserRelations]] = {}


def user_relations(catalog: Catalog) -> UserRelations:
    """The users' also-view relations over their training items (`sampling.exclude_related`)."""
    if id(catalog) not in _RELATIONS:
        _RELATIONS.clear()
        tables = catalog.sampling
        history = user_item_csr(catalog.train.users, catalog.train.items, tables.n_users, tables.n_items)
        relations = UserRelations.build(history, tables.n_items, tables.also_view_indptr, tables.also_view_indices)
        _RELATIONS[id(catalog)] = (catalog, relations)
    return _RELATIONS[id(catalog)][1]


def _group_order(positives: np.ndarray, k: int) -> np.ndarray:
    """Row order [p, its k negatives] for each positive p in the given order (mix_negatives puts
    positive p's negatives at rows B + p*k .. B + p*k + k - 1)."""
    order = np.empty((len(positives), 1 + k), dtype=np.int64)
    order[:, 0] = positives
    order[:, 1:] = len(positives) + positives[:, None] * k + np.arange(k)
    return order.ravel()


def trains_in_groups(config: Config) -> bool:
    """Whether training scores a positive and its own negatives together: the ranking losses
    compare them, the relation head and the user sequence describe the user of a whole group by
    its positive (its relations left out; only the items before it), and the choice among a
    negative's candidates scores them for their positive."""
    return (
        config.train.loss != "bce"
        or config.model.also_view_relation
        or config.model.also_buy_relation
        or config.model.cooccurrence_relation
        or config.model.user_sequence > 0
        or config.sampling.candidates_per_negative > 1
    )


def group_rows(config: Config) -> int:
    """Rows that must stay together in a batch: a positive and every negative drawn for it when
    training is in groups (`trains_in_groups`), else one row."""
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


def preview_mix(catalog: Catalog, config: Config, max_blocks: int = 8) -> MixStats:
    """What the first blocks of the first epoch at the full share draw (epoch 0, or the end of
    the warm-up; the same draws as training): the realised also-view
    share can fall short of `sampling.also_view_fraction` where items' also-view lists are short
    or hold the user's own items, and the shortfall comes from the random pool. Told to the user
    before training so a searched fraction is read as what it buys on their data."""
    sizes = block_sizes(len(catalog.train), config.sampling.block_rows)
    args = mix_arguments(config, epoch=config.sampling.also_view_warmup_epochs)
    total = MixStats()
    for block in range(min(max_blocks, len(sizes))):
        _, stats = _draw_block(
            block,
            catalog,
            args["block_rows"],
            args["negatives_per_positive"],
            args["also_view_fraction"],
            args["random_pool"],
            args["popularity_exponent"],
            epoch_rng(args["seed"], args["epoch"], block),
            user_relations(catalog) if args["exclude_related"] else None,
        )
        total = total.merge(stats)
    return total


def describe_mix(stats: MixStats, fraction: float, warmup_epochs: int = 0) -> str:
    """One line: the also-view share asked for, the share drawn, and why they differ; with
    `sampling.exclude_related`, what that left out."""
    line = _describe_share(stats, fraction, warmup_epochs)
    if stats.related_left_out:
        line += (
            f"; {stats.related_left_out:,} drawn candidates left out as also-view neighbours of the user's"
            f" other items, {stats.related_kept:,} negatives kept although related (nothing unrelated was left)"
        )
    return line


def _describe_share(stats: MixStats, fraction: float, warmup_epochs: int) -> str:
    if fraction == 0 or stats.negatives == 0:
        return f"also-view share {fraction:.2f}"
    if warmup_epochs:
        return f"also-view share rising from 0 to {fraction:.2f} over {warmup_epochs} epochs; then " + _describe_share(
            stats, fraction, 0
        )
    short = stats.hard_shortfall / max(stats.hard_requested, 1)
    line = f"also-view share {fraction:.2f} asked, {stats.hard_share:.2f} drawn"
    if short > 0.005:
        left_out = "the user's own items" + (" and their also-view neighbours" if stats.related_left_out else "")
        line += (
            f" ({short:.0%} of the asked also-view draws came from random items:"
            f" lists too short once {left_out} are left out)"
        )
    return line


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


def epoch_rows(plan: RunPlan, block_sizes: np.ndarray, samples_per_positive: int, epoch: int) -> int:
    """Mixed samples of one epoch of one worker: every positive of its blocks with its negatives."""
    blocks = worker_blocks(plan.n_blocks, plan.seed, epoch, plan.rank, plan.world)
    return int(block_sizes[blocks].sum()) * samples_per_positive


def also_view_share(config: Config, epoch: int) -> float:
    """The also-view share asked for in `epoch`: `sampling.also_view_fraction`, reached linearly
    over `sampling.also_view_warmup_epochs` epochs (epoch 0 draws none)."""
    s = config.sampling
    if s.also_view_warmup_epochs == 0:
        return s.also_view_fraction
    return s.also_view_fraction * min(1.0, epoch / s.also_view_warmup_epochs)


def mix_arguments(config: Config, epoch: int) -> dict[str, Any]:
    """The keyword arguments of :func:`mix_block` (after the block and catalog) for `epoch`."""
    s = config.sampling
    return {
        "block_rows": s.block_rows,
        "seed": config.seed,
        "epoch": epoch,
        "negatives_per_positive": s.drawn_per_positive,
        "also_view_fraction": also_view_share(config, epoch),
        "random_pool": s.random_pool,
        "popularity_exponent": s.popularity_exponent,
        "grouped": group_rows(config) > 1,
        "exclude_related": s.exclude_related,
    }
