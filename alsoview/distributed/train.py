"""Training under Ray Train: the per-worker loop and the TorchTrainer that runs it.

Each epoch, every worker iterates its Ray Data feed (`feed.py`: its share of the training
positives with fresh negatives for that epoch), cuts the mixed blocks into batches and runs
`loop.train_epoch` on them; `validation.validate` scores the epoch; rank 0 checkpoints
(`checkpoint.py`). This module owns the Ray wiring, not the maths.
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alsoview.config import Config
from alsoview.data.catalog import Catalog
from alsoview.distributed.feed import EpochFeeder, block_columns, cached_catalog
from alsoview.distributed.resources import (
    ResourcePlan,
    check_sample_memory,
    plan_resources,
    sharing_cores_warning,
    with_planned_split,
)
from alsoview.distributed.stall import StallError, StallWatch, WorkerBeat, diagnose
from alsoview.errors import RunFailedError, UserError, first_line, own_error_in
from alsoview.evaluation.validation import ValidationSet, validation_set
from alsoview.sampling.blocks import RunPlan, block_sizes, preview_mix
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


def on_this_node() -> Any:
    """A scheduling strategy for an actor that must live on the caller's node, and die with it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


# ---------------------------------------------------------------- the loop on each worker


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
    if saved is None:
        # Ray Train restores what every rank reported. Rank 0 saves its checkpoint before the
        # others' reports of that epoch are collected, so a worker lost in between leaves a
        # newer one on disk than Ray has (and after a killed driver Ray may have none): the
        # newest checkpoint on disk that loads is used.
        found = runs.latest_checkpoint(run_storage)
        if found is None:
            return None
        folder, saved = found
        log.info("resuming from %s", folder)
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
    if resumed is not None:
        trainer.resume(resumed.saved)
        if rank == 0:
            log.info("resumed from the checkpoint of epoch %d", trainer.state.resumed_from_epoch)
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
                "run already trained to epoch %d: raise train.epochs to continue it, or use another train.run_name",
                trainer.state.epoch,
            )
        report(dict(trainer.state.history[-1]))
        return
    if resumed is not None and not resumed.reported:
        # The epoch resumed from never reached Ray (a worker was lost before its report was
        # collected): report it now, so Ray Train restores it after another failure and Tune
        # counts the epoch (ASHA's rungs are counted in reports).
        if rank == 0:
            log.info("reporting epoch %d again: Ray had not collected it before the restart", trainer.state.epoch)
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


# ---------------------------------------------------------------- the driver


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]


def build_trainer(
    config: Config,
    catalog: Catalog,
    plan: ResourcePlan,
    callbacks: list | None = None,
    run_name: str | None = None,
    storage_path: str | None = None,
    board: Any = None,
) -> Any:
    """The TorchTrainer for `config` with the split of `plan` (also used by Tune, one per trial)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from alsoview.distributed.process_group import NodeAddressTorchConfig

    check_sample_memory(config, len(catalog.train), ray.cluster_resources(), plan)
    sharing = sharing_cores_warning(config, plan)
    if sharing:
        log.warning(sharing)
    blocks = block_sizes(len(catalog.train), config.sampling.block_rows)
    if len(blocks) < config.train.num_workers:
        raise UserError(
            f"{len(catalog.train)} training positives make {len(blocks)} blocks of "
            f"sampling.block_rows={config.sampling.block_rows}: fewer than train.num_workers="
            f"{config.train.num_workers}; lower sampling.block_rows"
        )
    config = with_planned_split(config, plan)  # the workers' feeds ask the plan's CPUs per task
    name = run_name or config.train.run_name
    storage = storage_path or str(Path(config.train.runs_dir).resolve())
    setup = WorkerSetup(
        config=config,
        catalog_ref=[ray.put(catalog)],
        validation=validation_set(catalog, config.seed, config.train.valid_users),
        run_storage=str(Path(storage) / name),
        torch_threads=plan.torch_threads,
        board=board,
    )
    log.info(
        "training %s: %d positives in %d blocks, k=%d, %s; %d torch threads a worker; %s",
        name,
        len(catalog.train),
        len(blocks),
        config.sampling.negatives_per_positive,
        preview_mix(catalog, mix_spec(config)).describe(
            config.sampling.also_view_fraction, config.sampling.also_view_warmup_epochs
        ),
        plan.torch_threads,
        plan.summary(),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=setup,
        torch_config=NodeAddressTorchConfig(),  # the rendezvous store listens on the node's address only
        scaling_config=ScalingConfig(
            num_workers=config.train.num_workers,
            use_gpu=plan.use_gpu,
            resources_per_worker={"CPU": plan.cpus_per_worker},  # Ray Train adds GPU: 1 with use_gpu
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=config.train.num_to_keep),
            # With a stall timeout, workers that cannot be placed within it end the run (stall.py)
            failure_config=FailureConfig(
                max_failures=config.train.max_failures,
                controller_failure_limit=0 if config.train.stall_timeout > 0 else -1,
            ),
            callbacks=callbacks,
        ),
    )


def fit_watched(
    config: Config,
    catalog: Catalog,
    plan: ResourcePlan,
    callbacks: list | None = None,
    run_name: str | None = None,
    storage_path: str | None = None,
) -> Any:
    """`build_trainer(...).fit()` under the stall watch (stall.py) unless train.stall_timeout is 0.

    Raises StallError (one line: what waited, resources held and free) when the run stopped
    because nothing moved for train.stall_timeout seconds.
    """
    import ray

    from alsoview.distributed.stall import (
        ProgressBoard,
        is_start_timeout,
        register_controller_callback,
        train_start_timeout,
    )

    timeout = config.train.stall_timeout
    if timeout <= 0:
        return build_trainer(config, catalog, plan, callbacks, run_name, storage_path).fit()
    # on the driver's node: a lost worker node must not take the run's progress record with it
    board = ray.remote(num_cpus=0, scheduling_strategy=on_this_node())(ProgressBoard).remote()
    callbacks = [*(callbacks or []), register_controller_callback(board)]
    trainer = build_trainer(config, catalog, plan, callbacks, run_name, storage_path, board)
    name = run_name or config.train.run_name
    try:
        with train_start_timeout(timeout), StallWatch(board, timeout, plan, name) as watch:
            try:
                result = trainer.fit()
            except Exception as exc:
                if watch.reason is None and is_start_timeout(exc):  # Train's timeout came first
                    watch.reason = diagnose(ray.get(board.snapshot.remote()), plan, timeout, name)
                if watch.reason is None:
                    raise
                result = None
        if watch.reason is not None:
            raise StallError(watch.reason)
        return result
    finally:
        ray.kill(board)


def train(config: Config, catalog: Catalog | None = None) -> TrainResult:
    """Fit the model with Ray Train; writes config.yaml, metrics.json, history.csv and model.pt to the run dir."""
    import ray

    from alsoview.distributed.runtime import start_run

    begun = start_run(config, config.train.run_name, catalog)
    config, catalog, run_dir = begun.config, begun.catalog, begun.run_dir
    _check_resumable(run_dir, catalog)
    plan = plan_resources(config, ray.cluster_resources(), "train")
    try:
        result = fit_watched(config, catalog, plan)
    except SystemExit:  # Ray Train's Ctrl-C handler aborts the run, then calls sys.exit inside fit()
        raise KeyboardInterrupt(f"training stopped; {_how_to_resume(run_dir)}") from None
    except StallError as exc:
        raise StallError(f"{exc}; {_how_to_resume(run_dir)}") from None
    except Exception as exc:
        raise _failure(exc, run_dir, config.train.max_failures) from None
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint; see the worker logs under {run_dir}")
    with result.checkpoint.as_directory() as folder:
        metrics = runs.write_run_outputs(run_dir, runs.load_checkpoint(folder), config.data.prepared_dir)
    runs.prune_checkpoints(run_dir, config.train.num_to_keep)
    return TrainResult(run_dir, metrics)


def _check_resumable(run_dir: Path, catalog: Catalog) -> None:
    """A checkpoint of another dataset, or of an older model format, under this run name is refused
    here, before any worker starts: raised in the workers it would be retried train.max_failures
    times first."""
    found = runs.latest_checkpoint(run_dir)
    if found is not None:
        found[1].check_resumable(found[0], catalog.vocabulary())


def _how_to_resume(run_dir: Path) -> str:
    found = runs.checkpoint_dirs(run_dir)
    if not found:
        return "no checkpoint was written, so running it again starts over"
    return f"run the same command again to resume from its last checkpoint ({found[-1].name})"


def _failure(exc: Exception, run_dir: Path, max_failures: int) -> Exception:
    """A failed fit as one line: a worker's UserError as itself; anything else as RunFailedError
    naming the cause, the file that holds the whole traceback, and how to resume."""
    failures = list(getattr(exc, "worker_failures", {}).values())
    for failure in failures:
        user_error = own_error_in(failure)
        if isinstance(user_error, UserError):
            return UserError(str(user_error))
    cause = failures[-1] if failures else exc
    details = run_dir / runs.ERROR_FILE
    details.write_text("".join(traceback.format_exception(exc)))
    restarts = "no restart allowed (train.max_failures=0)" if max_failures == 0 else f"after {max_failures} restart(s)"
    why = f"{type(cause).__name__}: {first_line(cause)}"
    return RunFailedError(f"training failed, {restarts}: {why}; traceback in {details}; {_how_to_resume(run_dir)}")
