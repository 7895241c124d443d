"""Training without Ray: one epoch (`train_epoch`) and the epochs of a run (`run_epochs`, the one
epoch driver), used by the Ray Train worker and by the in-process path alike.

The worker (`train.py`) hands `run_epochs` its batches from its Ray Data feed, a sum over the
workers and a checkpointing report; `fit_in_process` (benchmarks, tests) hands it the same mixed
blocks made in this process. Either way the same code takes the steps, validates, decides on
early stopping and writes one set of history keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from alsoview.seeds import torch_epoch_seed
from alsoview.training.losses import LossStep, binary_cross_entropy


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch for one worker's epoch (dropout masks, any draw a loss makes): the numbers
    depend on (seed, epoch, rank) only, so an epoch replayed after a restart from a checkpoint
    draws exactly what it drew the first time."""
    torch.manual_seed(torch_epoch_seed(seed, epoch, rank))


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
    loss_step: LossStep = binary_cross_entropy,
) -> EpochTotals:
    """At most `steps` optimiser steps of `loss_step` (losses.py; binary cross-entropy by
    default) on (user, item, label) batches.

    Batches may carry `is_hard` (1 for an also-view negative) to count the realised share of
    hard negatives. With several workers `sync_gradients` averages the gradients across them
    (`gradient_sync.RowGradientSync`); each of its collectives needs every rank, so every rank
    must take the same number of steps: the caller fixes it. `on_step(steps so far)` runs after
    each step (the Ray Train worker reports progress there: stall.py).
    """
    totals = EpochTotals()
    model.train()
    for step in range(steps):
        waited = time.perf_counter()
        batch = next(batches, None)
        totals.data_wait_seconds += time.perf_counter() - waited
        if batch is None:
            break
        loss = loss_step(model, batch)
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


@dataclass
class EpochInputs:
    """One epoch's batches for `run_epochs`, and what the caller already waited for them."""

    batches: Iterator[dict[str, torch.Tensor]]
    steps: int  # optimiser steps this epoch (the same on every worker)
    wait_seconds: float = 0.0  # waited for the epoch's feed before its first batch


def run_epochs(
    model: torch.nn.Module,
    optimizer: Any,
    config: Any,
    state: Any,
    epoch_inputs: Callable[[int], EpochInputs],
    validate: Callable[[torch.nn.Module], dict[str, float]],
    report: Callable[[dict[str, Any]], None],
    first_epoch: int = 0,
    sync_gradients: Any = None,
    sum_over_workers: Callable[[list[float]], list[float]] = lambda values: values,
    on_step: Callable[[int], None] | None = None,
    loss_step: LossStep = binary_cross_entropy,
    rank: int = 0,
) -> Any:
    """Train epochs `first_epoch` .. `train.epochs - 1`, or until early stopping; `state`
    (`checkpoint.LoopState`) keeps the best weights and every epoch's metrics.

    Each epoch: `seed_epoch`, `epoch_inputs(epoch)`, `train_epoch`, the totals summed over the workers,
    `validate(model)`, then the history row and `report(metrics)` (the worker checkpoints there).
    """
    metric = config.train.early_stopping_metric
    for epoch in range(first_epoch, config.train.epochs):
        start = time.perf_counter()
        seed_epoch(config.seed, epoch, rank)
        inputs = epoch_inputs(epoch)
        sent_before = (sync_gradients.bytes_sent, sync_gradients.steps) if sync_gradients is not None else (0, 0)
        totals = train_epoch(model, optimizer, inputs.batches, inputs.steps, sync_gradients, on_step, loss_step)
        train_seconds = time.perf_counter() - start
        loss_sum, seen, hard, negatives = sum_over_workers(totals.as_list())
        # Every rank validates on the same users: identical weights give identical numbers, so
        # every rank takes the same early-stopping decision without a broadcast.
        metrics = validate(model)
        metrics.update(
            {
                "epoch": epoch,
                "train/loss": loss_sum / max(seen, 1.0),
                "train/samples": seen,
                "train/hard_negative_share": hard / max(negatives, 1.0),  # realised share of also-view negatives
                "train/learning_rate": optimizer.param_groups[0]["lr"],
                "train/epoch_seconds": time.perf_counter() - start,  # training and validation
                "train/seconds": train_seconds,  # this worker's data pipeline and steps
                "train/samples_per_second": seen / train_seconds,  # all workers' samples
                "train/data_wait_seconds": inputs.wait_seconds + totals.data_wait_seconds,  # ~0 when the feed keeps up
            }
        )
        if sync_gradients is not None:  # what each worker handed to the gradient collectives per step
            steps_taken = max(sync_gradients.steps - sent_before[1], 1)
            metrics["train/gradient_bytes_per_step"] = (sync_gradients.bytes_sent - sent_before[0]) / steps_taken
            metrics["train/all_reduce_bytes_per_step"] = sync_gradients.all_reduce_bytes  # DDP's, for comparison
        no_progress = state.record(epoch, metrics[metric], model.state_dict(), config.train.patience)
        reached = reached_target(metrics[metric], config.train.stop_at)
        stop = no_progress or reached
        metrics.update(
            {
                "best/epoch": state.best_epoch,
                f"best/{metric}": state.best_value,
                "early_stopped": stop,
                "reached_stop_at": reached,  # stopped because the metric reached train.stop_at
                "resumed_from_epoch": -1 if state.resumed_from_epoch is None else state.resumed_from_epoch,
            }
        )
        state.history.append(dict(metrics))
        report(metrics)
        if stop:
            break
    return state


def reached_target(value: float, target: float | None) -> bool:
    """Has an epoch's early-stopping metric reached `train.stop_at`? (None: there is no target.)"""
    return target is not None and value >= target


def fit_in_process(
    catalog: Any, config: Any, log: Any = None, model: torch.nn.Module | None = None, optimizer: Any = None
) -> tuple[torch.nn.Module, Any]:
    """Train `config` on `catalog` in this process, as a one-worker `alsoview train` would: the same
    batches, `train_epoch`, validation and early stopping; returns the model with its best
    epoch's weights (eval mode) and the loop state (history, best epoch). `model` and
    `optimizer` replace the configured ones (benchmarks compare implementations)."""
    from alsoview.evaluation.validation import validate, validation_set
    from alsoview.model import build_model
    from alsoview.training.batches import BatchPlan, fixed_size_batches, local_epoch_blocks
    from alsoview.training.checkpoint import LoopState
    from alsoview.training.losses import build_loss
    from alsoview.training.optim import build_optimizer

    torch.manual_seed(config.seed)
    model = model or build_model(catalog, config.model, config.seed)
    optimizer = optimizer or build_optimizer(model, config.train.learning_rate, config.model.sparse_embeddings)
    valid = validation_set(catalog, config.seed, config.train.valid_users)
    plan = BatchPlan.of(config, len(catalog.train))
    metric = config.train.early_stopping_metric

    def epoch_inputs(epoch: int) -> EpochInputs:
        blocks = local_epoch_blocks(catalog, config, epoch)
        return EpochInputs(fixed_size_batches(blocks, plan.rows_per_batch), plan.steps(epoch))

    def report(metrics: dict[str, Any]) -> None:
        if log is not None:
            log(
                f"epoch {metrics['epoch']}: loss {metrics['train/loss']:.4f}  {metric} {metrics[metric]:.4f}  "
                f"({metrics['train/epoch_seconds']:.1f}s)"
            )

    state = run_epochs(
        model,
        optimizer,
        config,
        LoopState(),
        epoch_inputs,
        lambda m: validate(m, valid, torch.device("cpu")),
        report,
        loss_step=build_loss(config, catalog),
    )
    model.load_state_dict(state.best_model_state)
    return model.eval(), state
