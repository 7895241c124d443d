"""One training epoch, without Ray: the step the Ray Train worker runs and the benchmarks call.

The worker (`train.py`) feeds it batches from its Ray Data feed; `benchmarks/` feed it the same
mixed blocks in process. Either way the same function takes the steps and counts what it saw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch


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


@dataclass
class EpochTotals:
    """Sums over one worker's epoch (summed again over workers by the caller)."""

    loss_sum: float = 0.0  # loss x rows, so the mean weights every sample equally
    samples: float = 0.0
    hard_negatives: float = 0.0
    negatives: float = 0.0
    data_wait_seconds: float = 0.0  # time spent waiting for the next batch

    def as_list(self) -> list[float]:
        return [self.loss_sum, self.samples, self.hard_negatives, self.negatives]


def train_epoch(
    model: torch.nn.Module,
    optimizer: Any,
    batches: Iterator[dict[str, torch.Tensor]],
    steps: int,
    sync_gradients: Callable[[], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> EpochTotals:
    """At most `steps` optimiser steps of binary cross-entropy on (user, item, label) batches.

    Batches may carry `is_hard` (1 for an also-view negative) to count the realised share of
    hard negatives. With several workers `sync_gradients` averages the gradients across them
    (`gradient_sync.RowGradientSync`); each of its collectives needs every rank, so every rank
    must take the same number of steps: the caller fixes it. `on_step(steps so far)` runs after
    each step (the Ray Train worker reports progress there: stall.py).
    """
    loss_fn = torch.nn.BCEWithLogitsLoss()
    totals = EpochTotals()
    model.train()
    for step in range(steps):
        waited = time.perf_counter()
        batch = next(batches, None)
        totals.data_wait_seconds += time.perf_counter() - waited
        if batch is None:
            break
        loss = loss_fn(model(batch["user"], batch["item"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sync_gradients is not None:
            sync_gradients()
        optimizer.step()
        size = len(batch["label"])
        totals.loss_sum += loss.item() * size
        totals.samples += size
        totals.negatives += float(size - batch["label"].sum())
        if "is_hard" in batch:
            totals.hard_negatives += float(batch["is_hard"].sum())
        if on_step is not None:
            on_step(step + 1)
    return totals


# What the training step takes from a mixed block's columns (ids widen to int64 for embeddings).
SAMPLE_DTYPES = {"user": torch.long, "item": torch.long, "label": torch.float32, "is_hard": torch.float32}


def sample_tensors(mixed: dict[str, Any], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A mixed block's numpy columns (`feed.mix_block`) as training tensors on `device`; copies,
    so read-only columns from Ray's object store are fine."""
    return {name: torch.tensor(mixed[name], dtype=dtype, device=device) for name, dtype in SAMPLE_DTYPES.items()}


def local_epoch_blocks(catalog: Any, config: Any, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch's mixed blocks in this process, as one Ray Train worker of a one-worker run gets them
    (the same blocks, order and negatives): for benchmarks and tests without Ray."""
    from alsoview.feed import block_sizes, mix_arguments, mix_block, worker_blocks

    n_blocks = len(block_sizes(len(catalog.train), config.sampling.block_rows))
    for block in worker_blocks(n_blocks, config.seed, epoch, 0, 1):
        yield sample_tensors(mix_block(int(block), catalog, **mix_arguments(config, epoch)))


def fit_in_process(
    catalog: Any, config: Any, log: Any = None, model: torch.nn.Module | None = None, optimizer: Any = None
) -> tuple[torch.nn.Module, Any]:
    """Train `config` on `catalog` in this process, as a one-worker `alsoview train` would: the same
    batches, `train_epoch`, validation and early stopping; returns the model with its best
    epoch's weights (eval mode) and the loop state (history, best epoch). `model` and
    `optimizer` replace the configured ones (benchmarks compare implementations)."""
    from alsoview.checkpoint import LoopState
    from alsoview.feed import block_sizes, steps_per_epoch
    from alsoview.model import build_model
    from alsoview.optim import build_optimizer
    from alsoview.validation import validate, validation_set

    torch.manual_seed(config.seed)
    model = model or build_model(catalog, config)
    optimizer = optimizer or build_optimizer(model, config.train.learning_rate, config.model.sparse_embeddings)
    valid = validation_set(catalog, config.seed, config.train.valid_users)
    sizes = block_sizes(len(catalog.train), config.sampling.block_rows)
    state = LoopState()
    metric = config.train.early_stopping_metric
    for epoch in range(config.train.epochs):
        begin = time.perf_counter()
        steps = steps_per_epoch(
            sizes, config.seed, epoch, 1, 1 + config.sampling.negatives_per_positive, config.train.batch_size
        )
        totals = train_epoch(
            model,
            optimizer,
            fixed_size_batches(local_epoch_blocks(catalog, config, epoch), config.train.batch_size),
            steps,
        )
        metrics = {
            "epoch": epoch,
            "train/loss": totals.loss_sum / max(totals.samples, 1.0),
            **validate(model, valid, torch.device("cpu")),
            "train/epoch_seconds": time.perf_counter() - begin,
        }
        stop = state.record(epoch, metrics[metric], model.state_dict(), config.train.patience)
        state.history.append(metrics)
        if log is not None:
            log(
                f"epoch {epoch}: loss {metrics['train/loss']:.4f}  {metric} {metrics[metric]:.4f}  "
                f"({metrics['train/epoch_seconds']:.1f}s)"
            )
        if stop:
            break
    model.load_state_dict(state.best_model_state)
    return model.eval(), state
