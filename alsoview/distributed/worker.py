"""The loop on each Ray Train worker: its feed, its `Trainer`, its reports and checkpoints.

Each epoch, every worker takes its mixed blocks from its feed (`feed.EpochFeeder`: its share of
the training positives with fresh negatives for that epoch), cuts them into batches and steps
the run's `training.trainer.Trainer`; rank 0 checkpoints (`training/checkpoint.py`) with each
report. This module owns the Ray wiring of a worker, not the maths; `train.py` is the driver.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alsoview.config import Config
from alsoview.data.catalog import Catalog
from alsoview.distributed.feed import EpochFeeder, block_columns, cached_catalog
from alsoview.distributed.runtime import on_this_node
from alsoview.distributed.stall import WorkerBeat
from alsoview.errors import UserError
from alsoview.evaluation.validation import ValidationSet
from alsoview.sampling.blocks import RunPlan, block_sizes
from alsoview.training import checkpoint as runs
from alsoview.training.batches import BatchPlan, fixed_size_batches, mix_spec, sample_tensors
from alsoview.training.trainer import EpochInputs, Trainer

log = logging.getLogger("alsoview")


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum per-worker numbers across the worker group (identity on a single worker)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor.cpu().tolist()


@dataclass(frozen=True)
class WorkerSetup:
    """What the driver hands every training worker (Ray Train's `train_loop_config`)."""

    config: Config
    catalog_ref: list  # [ObjectRef of the Catalog]: see feed.cached_catalog
    validation: ValidationSet
    run_storage: str  # Ray Train's folder of this run (its checkpoints)
    torch_threads: int
    board: Any = None  # stall.ProgressBoard actor the workers report progress to (None: unwatched)


@dataclass(frozen=True)
class Resumed:
    saved: runs.SavedCheckpoint
    reported: bool  # Ray Train handed it over, so its epoch's report reached Ray (and Tune)


def _saved_checkpoint(vocabulary: dict[str, int], run_storage: str) -> Resumed | None:
    """The checkpoint Ray Train restored, or else the newest one on disk that loads; None: a fresh start."""
    import ray.train

    saved = None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        try:
            with restored.as_directory() as folder:
                saved = runs.load_checkpoint(folder)
        except UserError as exc:
            log.warning("the checkpoint Ray Train restored does not load (%s); trying older ones", exc)
    reported = saved is not None
    # Ray Train restores the last checkpoint whose epoch every rank reported. Rank 0 saves its
    # checkpoint before the others' reports of that epoch are collected, so a worker lost in
    # between, or a driver stopped (Ctrl-C, kill -9) before Ray registered the last reports,
    # leaves newer ones on disk than Ray has: the newest on disk that loads wins, so no
    # finished epoch is trained again.
    newer = runs.newer_on_disk(saved, run_storage)
    if newer is not None:
        folder, saved = newer
        reported = False
        log.info("resuming from %s", folder)
    if saved is None:
        return None
    saved.check_resumable(run_storage, vocabulary)
    return Resumed(saved, reported)


def train_loop_per_worker(setup: WorkerSetup) -> None:
    """Runs on every Ray Train worker: row-exchange gradient sync, per-epoch mixing feed, validation, checkpoints."""
    import ray.data
    import ray.train
    import ray.train.torch

    from alsoview.logs import quiet_ray

    config = setup.config
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    beat = WorkerBeat(setup.board, rank)
    torch.set_num_threads(setup.torch_threads)
    torch.manual_seed(config.seed)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # reproducible batch order
    quiet_ray()

    catalog = cached_catalog(setup.catalog_ref)
    vocab = catalog.vocabulary()
    device = ray.train.torch.get_device()
    resumed = _saved_checkpoint(vocab, setup.run_storage)
    first_epoch = 0 if resumed is None else resumed.saved.state.epoch + 1
    sizes = block_sizes(len(catalog.train), config.sampling.block_rows)
    feeder, asked = None, {}
    if first_epoch < config.train.epochs:
        # The feed starts before the model is built, so the first epoch's mixing overlaps it. It
        # runs in its own actor (see EpochFeeder for why), one Ray Data execution for the whole
        # run, on this worker's node: its epochs are read there, and a restart after a lost node
        # never places it on a node that is gone but not yet declared dead (it waited there
        # until the node was). An explicit strategy also keeps it and its Ray Data tasks out of
        # this worker's placement group.
        plan = RunPlan(
            n_blocks=len(sizes),
            rank=rank,
            world=world,
            seed=config.seed,
            first_epoch=first_epoch,
            epochs=config.train.epochs,
            blocks_per_task=config.sampling.blocks_per_task,
        )
        feeder = ray.remote(num_cpus=0, scheduling_strategy=on_this_node())(EpochFeeder).remote(
            mix_spec(config), config.sampling.cpus_per_task, setup.catalog_ref, plan, sizes
        )
        asked = {first_epoch: feeder.epoch.remote(first_epoch)}
    try:
        _train_on_worker(setup, catalog, resumed, feeder, asked, device, beat)
    finally:
        if feeder is not None:
            ray.kill(feeder)  # frees the epoch it may have mixed ahead


def _train_on_worker(
    setup: WorkerSetup,
    catalog: Catalog,
    resumed: Resumed | None,
    feeder: Any,
    asked: dict[int, Any],
    device: torch.device,
    beat: WorkerBeat,
) -> None:
    """The run's `Trainer` (from `resumed` when resuming) fed by this worker's feed, reporting
    each epoch to Ray Train with rank 0's checkpoint."""
    import ray
    import ray.train

    config = setup.config
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    vocab = catalog.vocabulary()
    trainer = Trainer(config, catalog, device, rank)
    # Each line names its run: Ray folds identical lines of several trials into one, printed late.
    run = Path(setup.run_storage).name
    if resumed is not None:
        trainer.resume(resumed.saved)
        if rank == 0:
            log.info("%s resumed from the checkpoint of epoch %d", run, trainer.state.resumed_from_epoch)
    # Not DDP: it would all-reduce every embedding table each step (see training/gradient_sync.py).
    trainer.distribute()
    batches = BatchPlan.of(config, len(catalog.train), world)

    def report(metrics: dict[str, Any]) -> None:
        _report(metrics, trainer, setup, vocab, rank)

    if feeder is None:
        # Nothing left to train (e.g. the driver died after the last epoch): report the final
        # state again, so a restored Tune experiment records this trial's result and checkpoint.
        if rank == 0:
            log.info(
                "%s already trained to epoch %d, its last: nothing to train, its last result is reported again "
                "(raise train.epochs to train it further)",
                run,
                trainer.state.epoch,
            )
        report(dict(trainer.state.history[-1]))
        return
    if resumed is not None and not resumed.reported:
        # The epoch resumed from never reached Ray (a worker was lost before its report was
        # collected): report it now, so Ray Train restores it after another failure and Tune
        # counts the epoch (ASHA's rungs are counted in reports).
        if rank == 0:
            log.info("%s reporting epoch %d again: Ray had not collected it", run, trainer.state.epoch)
        report(dict(trainer.state.history[-1]))

    def feed(epoch: int) -> EpochInputs:
        """This worker's mixed blocks of `epoch` from its feed; the next epoch is asked for at
        once, so it is mixed while this one trains. Whole blocks come from the object store."""
        begin = time.perf_counter()
        beat.waiting(f"epoch {epoch}'s mixed samples from its feed")
        block_refs = ray.get(asked.pop(epoch))
        if epoch + 1 < config.train.epochs:
            asked[epoch + 1] = feeder.epoch.remote(epoch + 1)
        blocks = (sample_tensors(block_columns(ray.get(ref)), device) for ref in block_refs)
        return EpochInputs(
            fixed_size_batches(blocks, batches.rows_per_batch), batches.steps(epoch), time.perf_counter() - begin
        )

    def validate() -> dict[str, float]:
        metrics = trainer.validate_epoch(setup.validation)
        beat.progressed()
        return metrics

    trainer.fit(feed, validate, report, lambda values: _all_reduce_sum(values, device), on_step=beat.step)


def _report(metrics: dict[str, Any], trainer: Trainer, setup: WorkerSetup, vocab: dict[str, int], rank: int) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (the others would only duplicate it)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        model_state, optimizer_state = trainer.model.state_dict(), trainer.optimizer.state_dict()
        runs.save_checkpoint(folder, model_state, optimizer_state, trainer.state, setup.config, vocab)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    log.info("%s", epoch_line(metrics, run=Path(setup.run_storage).name))  # after: its checkpoint is saved


def epoch_line(metrics: dict[str, Any], run: str) -> str:
    """One epoch of one run as one log line (rank 0 only: the numbers are the whole group's)."""
    ranking = (
        f"  valid/full/ndcg@10 {metrics['valid/full/ndcg@10']:.4f}  hr@10 {metrics['valid/full/hr@10']:.4f}"
        if "valid/full/ndcg@10" in metrics
        else ""
    )
    return (
        "{run} epoch {epoch}: loss {loss:.4f}{ranking}  valid/auc {auc:.4f}  valid/hard_auc {hard:.4f}  "
        "hard share {share:.3f}  ({secs:.1f}s)"
    ).format(
        run=run,
        epoch=metrics["epoch"],
        loss=metrics["train/loss"],
        ranking=ranking,
        auc=metrics["valid/auc"],
        hard=metrics["valid/hard_auc"],
        share=metrics["train/hard_negative_share"],
        secs=metrics["train/epoch_seconds"],
    ) + _why_stopping(metrics)


def _why_stopping(metrics: dict[str, Any]) -> str:
    if metrics.get("reached_stop_at"):
        return "; stopping: the early-stopping metric reached train.stop_at"
    if metrics.get("early_stopped"):
        return "; stopping: no better early-stopping metric for train.patience epochs"
    return ""
