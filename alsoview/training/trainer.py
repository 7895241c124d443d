"""One trainer to read: the model, its optimiser, its loss and the early-stopping state of a run,
and an epoch as three steps (`train_epoch`, `validate_epoch`, `record`), in the shape of
torchtune's recipes and RecBole's trainer.

The Ray Train worker (`distributed/train.py`) and `fit_in_process` (tests, benchmarks) run the
same `Trainer.fit`; they differ only in what they plug in: where an epoch's batches come from (the
worker's Ray Data feed, or blocks mixed in this process), the gradient sync and the sum over
workers, and what a report does (the worker checkpoints there).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from alsoview.config import Config
from alsoview.data.catalog import Catalog
from alsoview.errors import UserError
from alsoview.seeds import torch_epoch_seed
from alsoview.training.checkpoint import LoopState, SavedCheckpoint
from alsoview.training.losses import LossStep, build_loss


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


@dataclass
class EpochInputs:
    """One epoch's batches, and what the caller already waited for them."""

    batches: Iterator[dict[str, torch.Tensor]]
    steps: int  # optimiser steps this epoch (the same on every worker: `batches.BatchPlan.steps`)
    wait_seconds: float = 0.0  # waited for the epoch's feed before its first batch


def take_steps(
    model: torch.nn.Module,
    optimizer: Any,
    batches: Iterator[dict[str, torch.Tensor]],
    steps: int,
    loss_step: LossStep,
    sync_gradients: Callable[[], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> EpochTotals:
    """At most `steps` optimiser steps of `loss_step` (losses.py) on (user, item, label) batches.

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
        value = loss.item()
        if not math.isfinite(value):  # before the step: the weights stay the last finite ones
            raise UserError(
                f"training diverged: the loss was {value} at step {step + 1} of the epoch; lower "
                "train.learning_rate (the checkpoints of the epochs before are kept)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sync_gradients is not None:
            sync_gradients()
        optimizer.step()
        size = len(batch["label"])
        totals.loss_sum += value * size
        totals.samples += size
        totals.negatives += float(size - batch["label"].sum())
        if "is_hard" in batch:
            totals.hard_negatives += float(batch["is_hard"].sum())
        if on_step is not None:
            on_step(step + 1)
    return totals


def _same(values: list[float]) -> list[float]:
    return values


class Trainer:
    """A run's model, optimiser, loss and early-stopping state (`LoopState`: the best weights and
    every epoch's metrics). `model` and `optimizer` replace the configured ones (benchmarks
    compare implementations)."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        device: torch.device | str = "cpu",
        rank: int = 0,
        model: torch.nn.Module | None = None,
        optimizer: Any = None,
    ) -> None:
        from alsoview.model import build_model
        from alsoview.training.optim import build_optimizer

        self.config, self.rank, self.device = config, rank, torch.device(device)
        self.model = model or build_model(catalog, config.model, config.seed)
        self.optimizer = optimizer or build_optimizer(
            self.model, config.train.learning_rate, config.model.sparse_embeddings
        )
        self.loss = build_loss(config, catalog, self.device)
        self.state = LoopState()
        self.sync: Any = None  # gradient_sync.RowGradientSync with several workers (`distribute`)

    def resume(self, saved: SavedCheckpoint) -> None:
        """Continue from a checkpoint: its weights, optimiser state and loop state."""
        self.model.load_state_dict(saved.model)
        self.optimizer.load_state_dict(saved.optimizer)
        self.state = saved.state

    def distribute(self) -> None:
        """Move to the device; with several workers, average gradients across them (after the
        optimiser is built and a checkpoint loaded: building the sync broadcasts rank 0's weights)."""
        from alsoview.training.gradient_sync import RowGradientSync

        self.model.to(self.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                self.sync = RowGradientSync(self.model)

    def train_epoch(
        self, epoch: int, batches: Iterator[dict[str, torch.Tensor]], steps: int, on_step: Any = None
    ) -> EpochTotals:
        """The epoch's steps, torch seeded for this epoch and worker: the numbers depend on (seed,
        epoch, rank) only, so an epoch replayed after a restart draws what it drew the first time."""
        torch.manual_seed(torch_epoch_seed(self.config.seed, epoch, self.rank))
        return take_steps(self.model, self.optimizer, batches, steps, self.loss, self.sync, on_step)

    def validate_epoch(self, valid: Any) -> dict[str, float]:
        """Every validation metric (`evaluation.validation.validate`). Every rank validates on the
        same users: identical weights give identical numbers, so every rank takes the same
        early-stopping decision without a broadcast."""
        from alsoview.evaluation.validation import validate

        return validate(self.model, valid, self.device)

    def record(self, epoch: int, metrics: dict[str, Any]) -> bool:
        """Keep the epoch's metrics (and its weights when they are the best yet) and add the
        early-stopping columns to `metrics`; True when training stops here (`train.patience`
        epochs without improvement, or `train.stop_at` reached)."""
        metric, train = self.config.train.early_stopping_metric, self.config.train
        if not math.isfinite(metrics[metric]):  # it could never be the best: no weights would be kept
            raise UserError(f"epoch {epoch}'s {metric} is {metrics[metric]}: the model's scores are not finite numbers")
        no_progress = self.state.record(epoch, metrics[metric], self.model.state_dict(), train.patience)
        reached = train.stop_at is not None and metrics[metric] >= train.stop_at
        stop = no_progress or reached
        metrics.update(
            {
                "best/epoch": self.state.best_epoch,
                f"best/{metric}": self.state.best_value,
                "early_stopped": stop,
                "reached_stop_at": reached,  # stopped because the metric reached train.stop_at
                "resumed_from_epoch": -1 if self.state.resumed_from_epoch is None else self.state.resumed_from_epoch,
            }
        )
        self.state.history.append(dict(metrics))
        return stop

    def fit(
        self,
        feed: Callable[[int], EpochInputs],
        validate: Callable[[], dict[str, float]],
        report: Callable[[dict[str, Any]], None],
        sum_over_workers: Callable[[list[float]], list[float]] = _same,
        on_step: Callable[[int], None] | None = None,
    ) -> LoopState:
        """Train from the epoch after the last one recorded to `train.epochs - 1`, or until early
        stopping: each epoch its batches (`feed(epoch)`), `train_epoch`, the totals summed over the
        workers, `validate()`, `record`, then `report(metrics)`."""
        for epoch in range(self.state.epoch + 1, self.config.train.epochs):
            start = time.perf_counter()
            inputs = feed(epoch)
            sent_before = (self.sync.bytes_sent, self.sync.steps) if self.sync is not None else (0, 0)
            totals = self.train_epoch(epoch, inputs.batches, inputs.steps, on_step)
            train_seconds = time.perf_counter() - start
            loss_sum, seen, hard, negatives = sum_over_workers(totals.as_list())
            metrics = validate()
            metrics.update(
                {
                    "epoch": epoch,
                    "train/loss": loss_sum / max(seen, 1.0),
                    "train/samples": seen,
                    "train/hard_negative_share": hard / max(negatives, 1.0),  # realised share of also-view negatives
                    "train/learning_rate": self.optimizer.param_groups[0]["lr"],
                    "train/epoch_seconds": time.perf_counter() - start,  # training and validation
                    "train/seconds": train_seconds,  # this worker's data pipeline and steps
                    "train/samples_per_second": seen / train_seconds,  # all workers' samples
                    "train/data_wait_seconds": inputs.wait_seconds + totals.data_wait_seconds,  # ~0: the feed keeps up
                }
            )
            if self.sync is not None:  # what each worker handed to the gradient collectives per step
                steps_taken = max(self.sync.steps - sent_before[1], 1)
                metrics["train/gradient_bytes_per_step"] = (self.sync.bytes_sent - sent_before[0]) / steps_taken
                metrics["train/all_reduce_bytes_per_step"] = self.sync.all_reduce_bytes  # DDP's, for comparison
            stop = self.record(epoch, metrics)
            report(metrics)
            if stop:
                break
        return self.state


def fit_in_process(
    catalog: Catalog, config: Config, log: Any = None, model: torch.nn.Module | None = None, optimizer: Any = None
) -> tuple[torch.nn.Module, LoopState]:
    """Train `config` on `catalog` in this process, as a one-worker `alsoview train` would: the same
    batches, steps, validation and early stopping; returns the model with its best epoch's
    weights (eval mode) and the loop state (history, best epoch)."""
    from alsoview.evaluation.validation import validation_set
    from alsoview.training.batches import BatchPlan, fixed_size_batches, local_epoch_blocks

    trainer = Trainer(config, catalog, model=model, optimizer=optimizer)
    valid = validation_set(catalog, config.seed, config.train.valid_users)
    plan = BatchPlan.of(config, len(catalog.train))
    metric = config.train.early_stopping_metric

    def feed(epoch: int) -> EpochInputs:
        blocks = local_epoch_blocks(catalog, config, epoch)
        return EpochInputs(fixed_size_batches(blocks, plan.rows_per_batch), plan.steps(epoch))

    def report(metrics: dict[str, Any]) -> None:
        if log is not None:
            log(
                f"epoch {metrics['epoch']}: loss {metrics['train/loss']:.4f}  {metric} {metrics[metric]:.4f}  "
                f"({metrics['train/epoch_seconds']:.1f}s)"
            )

    state = trainer.fit(feed, lambda: trainer.validate_epoch(valid), report)
    trainer.model.load_state_dict(state.best_model_state)
    return trainer.model.eval(), state
