"""Training under Ray Train, the driver's side: the TorchTrainer that runs each worker's loop
(`worker.py`), fitted under the stall watch (`stall.py`), and the run directory it leaves
(model.pt, history.csv, metrics.json, learning_curves.png, tensorboard/; failures as one line).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alsoview import storage
from alsoview.config import Config, with_absolute_paths
from alsoview.data.catalog import Catalog
from alsoview.distributed.resources import (
    ResourcePlan,
    check_sample_memory,
    plan_resources,
    sharing_cores_warning,
    with_planned_split,
)
from alsoview.distributed.runtime import on_this_node, train_logging_config
from alsoview.distributed.stall import StallError, StallWatch, diagnose
from alsoview.distributed.tracking import log_finished_run, require_trackers
from alsoview.distributed.worker import WorkerSetup, train_loop_per_worker
from alsoview.errors import RunFailedError, UserError, first_line, own_error_in, write_traceback
from alsoview.evaluation.validation import validation_set
from alsoview.reporting.history import write_history_views
from alsoview.reporting.plots import loss_title
from alsoview.sampling.blocks import block_sizes, preview_mix
from alsoview.training import checkpoint as runs
from alsoview.training.batches import mix_spec
from alsoview.training.optim import dense_adam_note

log = logging.getLogger("alsoview")


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
    dense = dense_adam_note(config.model, catalog.n_users, catalog.n_items)
    if dense:
        log.info("%s", dense)
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
            logging_config=train_logging_config(),  # Ray Train's INFO lines in its log files, not the terminal
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
    # A bar for a run typed at a terminal; a search's trials have Tune's table instead.
    bar = _progress_bar(config, catalog, board, name) if run_name is None else contextlib.nullcontext()
    try:
        with train_start_timeout(timeout), StallWatch(board, timeout, plan, name) as watch, bar:
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
    """Fit the model with Ray Train; writes config.yaml, metrics.json, history.csv, model.pt and the
    learning curves (learning_curves.png, tensorboard/) to the run dir; a run that stops or fails
    after some epochs leaves the curves of the epochs its last checkpoint holds."""
    require_trackers(config)
    with claim_run(config):
        return _train_claimed(config, catalog)


def claim_run(config: Config) -> Any:
    """The run's lock, held while it trains: a second process training the same run at once
    would resume it and write the same checkpoints, so it is refused in one line instead."""
    config = with_absolute_paths(config)
    run_dir = Path(config.train.runs_dir).resolve() / config.train.run_name
    return storage.held_or_refused(
        run_dir / runs.RUN_LOCK,
        f"train.run_name={config.train.run_name}",
        "wait for that run to end (the same command then resumes it), or choose another train.run_name",
    )


def _train_claimed(config: Config, catalog: Catalog | None) -> TrainResult:
    import ray

    from alsoview.distributed.runtime import start_run

    begun = start_run(config, config.train.run_name, catalog)
    config, catalog, run_dir = begun.config, begun.catalog, begun.run_dir
    runs.clear_run_leftovers(run_dir)
    _check_resumable(run_dir, catalog)
    plan = plan_resources(config, ray.cluster_resources(), "train")
    try:
        result = fit_watched(config, catalog, plan)
    except SystemExit:  # Ray Train's Ctrl-C handler aborts the run, then calls sys.exit inside fit()
        curves_so_far(run_dir, config)
        raise KeyboardInterrupt(f"training stopped; {_how_to_resume(run_dir)}") from None
    except StallError as exc:
        curves_so_far(run_dir, config)
        raise StallError(f"{exc}; {_how_to_resume(run_dir)}") from None
    except Exception as exc:
        curves_so_far(run_dir, config)
        raise _failure(exc, run_dir, config.train.max_failures) from None
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint; see the worker logs under {run_dir}")
    with result.checkpoint.as_directory() as folder:
        saved = runs.load_checkpoint(folder)
        metrics = runs.write_run_outputs(run_dir, saved, config.data.prepared_dir)
    log.info("%s", write_curves(run_dir, config, saved.state.history))
    runs.prune_checkpoints(run_dir, config.train.num_to_keep)
    log_finished_run(run_dir, config)  # tracking.mlflow, tracking.wandb: the finished run as one run each
    return TrainResult(run_dir, metrics)


def write_curves(run_dir: Path, config: Config, history: list[dict[str, Any]]) -> str:
    """learning_curves.png and tensorboard/ from a run's history rows; the line saying where they are."""
    train = config.train
    return write_history_views(
        run_dir, history, train.early_stopping_metric, loss_title(train.loss, train.hard_negative_weight)
    )


def curves_so_far(run_dir: Path, config: Config) -> None:
    """The learning curves of a run that stopped or failed, from the epochs of its newest
    checkpoint that loads; never in the way of the error that ended the run (only logged)."""
    try:
        found = runs.latest_checkpoint(run_dir)
        if found is not None:
            log.info("%s", write_curves(run_dir, config, found[1].state.history))
    except Exception as exc:  # the run's own error is what the user must read
        log.warning("learning curves not written: %s", first_line(exc))


def _progress_bar(config: Config, catalog: Catalog, board: Any, name: str) -> Any:
    """A tqdm bar of the run's steps on stderr when it is a terminal (progress.py), else nothing."""
    import ray

    from alsoview.distributed.progress import ProgressBar, on_a_terminal, planned_steps

    if not on_a_terminal():
        return contextlib.nullcontext()
    found = runs.latest_checkpoint(Path(config.train.runs_dir) / name)
    first_epoch = 0 if found is None else found[1].state.epoch + 1
    done, total = planned_steps(config, len(catalog.train), first_epoch)

    def rank_zero_steps() -> int:
        return ray.get(board.snapshot.remote(), timeout=30).steps.get(0, 0)

    return ProgressBar(name, rank_zero_steps, done, total)


def _check_resumable(run_dir: Path, catalog: Catalog) -> None:
    """A checkpoint of another dataset, or of an older model format, under this run name is refused
    here, before any worker starts: raised in the workers it would be retried train.max_failures
    times first."""
    found = runs.latest_checkpoint(run_dir)
    if found is not None:
        found[1].check_resumable(found[0], catalog.vocabulary())


def _how_to_resume(run_dir: Path) -> str:
    """Where the same command would resume: the newest checkpoint that loads (a newer one cut by
    a kill or a full disk is skipped), named with its epoch."""
    found = runs.latest_checkpoint(run_dir)
    if found is None:
        written = runs.checkpoint_dirs(run_dir)
        if written:
            return f"none of its checkpoints loads (the newest: {written[-1].name}), so running it again starts over"
        return "no checkpoint was written, so running it again starts over"
    folder, saved = found
    return f"run the same command again to resume from the checkpoint of epoch {saved.state.epoch} ({folder.name})"


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
    try:
        details.write_text("".join(traceback.format_exception(exc)))
    except OSError:  # the run's disk is full or gone: the traceback goes where the CLI puts its own
        details = write_traceback(exc, f"train (run {run_dir})")
    restarts = "no restart allowed (train.max_failures=0)" if max_failures == 0 else f"after {max_failures} restart(s)"
    why = f"{type(cause).__name__}: {first_line(cause)}"
    return RunFailedError(f"training failed, {restarts}: {why}; traceback in {details}; {_how_to_resume(run_dir)}")
