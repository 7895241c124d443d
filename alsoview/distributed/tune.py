"""Tuning: Ray Tune (Optuna TPE + ASHA) over a function that builds one TorchTrainer per trial.

Ray Train V2 style: Tune does not wrap the trainer; each trial's function builds and fits a
`TorchTrainer`, and Train's `TuneReportCallback` forwards every epoch's metrics to Tune so
ASHA can stop weak trials early. The question users come with is the also-view / random
balance, so the outputs put `sampling.also_view_fraction` first.

This module is the search; what follows it (trials.csv, best.json, the final model in best/,
report.md) is `tune_finish.py`. `compare.py` runs its grid with the same trial function,
resuming and trial log.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from alsoview import storage
from alsoview.config import Config, with_absolute_paths, with_overrides
from alsoview.data.catalog import Catalog
from alsoview.distributed.resources import TRIAL_CPU, ResourcePlan, plan_resources
from alsoview.distributed.stall import UNKNOWN_HOLDERS, Idle, StallError, holders, stalled_line, waits_on_cluster
from alsoview.distributed.tracking import require_trackers, tune_callbacks
from alsoview.distributed.tune_finish import TuneResult, finish, write_outputs
from alsoview.errors import RunFailedError, UserError, first_line, own_error_in
from alsoview.logs import verbose
from alsoview.training.checkpoint import RUN_LOCK, prune_checkpoints

log = logging.getLogger("alsoview")

TRIAL_RUNS = "train_runs"  # <tuning run>/train_runs/trial-<id>/: each trial's Ray Train run


def trial_run_name(trial_id: str) -> str:
    # The Train run name is the trial id: a restored tuning run resumes each trial's checkpoint.
    return f"trial-{trial_id}"


def param_space(config: Config) -> dict[str, Any]:
    """The configured search space as Tune distributions, keyed by dotted config keys."""
    from ray import tune

    makers = {
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "choice": lambda a: tune.choice(list(a)),
        "randint": lambda a: tune.randint(*a),
    }
    space = {}
    for key, spec in config.search_space()[0].items():  # without settings of parts that are off
        kind, args = next(iter(spec.items()))
        space[key] = makers[kind](args)
    if not space:
        raise UserError("config: tune.search_space is empty: nothing to tune")
    return space


def run_trial(
    params: dict[str, Any],
    base: Config,
    catalog: Catalog,
    plan: ResourcePlan,
    trainer_storage: str,
    train_env: dict[str, str] | None = None,
) -> None:
    """One Tune trial: the base config with the trial's parameters, fitted by a TorchTrainer.

    `train_env`: the driver's Ray Train settings (runtime.ray_train_env). A trial function runs in
    a Ray worker, which on a cluster started by `ray start` does not have the driver's
    environment, and Ray Train reads them from the environment of whoever builds the trainer.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from alsoview.distributed.train import fit_watched

    for name, value in (train_env or {}).items():
        os.environ.setdefault(name, value)
    config = with_overrides(base, params)
    run_name = trial_run_name(tune.get_context().get_trial_id())
    fit_watched(config, catalog, plan, [TuneReportCallback()], run_name, trainer_storage)


def trial_trainable(config: Config, catalog: Catalog, plan: ResourcePlan, run_dir: Path) -> Any:
    """`run_trial` bound to its config, catalog (shipped once) and the search's resource plan,
    asking Tune for the trial function's own sliver of CPU (`resources.TRIAL_CPU`)."""
    from ray import tune as ray_tune

    from alsoview.distributed.runtime import ray_train_env

    return ray_tune.with_resources(
        ray_tune.with_parameters(
            run_trial,
            base=config,
            catalog=catalog,
            plan=plan,
            trainer_storage=str(run_dir / TRIAL_RUNS),
            train_env=ray_train_env(),
        ),
        {"CPU": TRIAL_CPU},
    )


def restore_or_start(run_dir: Path, trainable: Any, new_tuner: Callable[[], Any]) -> Any:
    """The experiment in `run_dir` restored when it exists (unfinished trials resume), else `new_tuner()`."""
    from ray import tune as ray_tune

    if ray_tune.Tuner.can_restore(str(run_dir)):
        check_experiment_is_ours(run_dir)
        log.info("resuming the experiment in %s (unfinished trials continue from their checkpoints)", run_dir)
        return ray_tune.Tuner.restore(str(run_dir), trainable=trainable, resume_errored=True)
    return new_tuner()


def check_experiment_is_ours(run_dir: Path) -> None:
    """Refuse to resume an experiment whose state files someone else could have written.

    `Tuner.restore` unpickles Ray Tune's state (tuner.pkl, the searcher's state, the trials), so
    writing those files means running code as whoever resumes. They must belong to this user and
    not be writable by others, like the folder that holds them.
    """
    uid = os.getuid()
    for path in [run_dir, *(p for p in run_dir.iterdir() if p.is_file())]:
        info = path.stat()
        if info.st_uid != uid or info.st_mode & stat.S_IWOTH:
            whose = "belongs to another user" if info.st_uid != uid else "is writable by every user"
            raise UserError(
                f"{path} {whose}: refusing to resume, because resuming unpickles Ray Tune's state files "
                f"(code in them would run as you); use another tune.name, or fix the ownership"
            )


class TrialLog(Callback):
    """One log line when a trial starts (its settings) and when it ends (its result), in place of Tune's tables."""

    def __init__(self, total: int, metric: str) -> None:
        self.total, self.metric, self.ended = total, metric, 0

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        settings = ", ".join(f"{key.split('.')[-1]}={_short(value)}" for key, value in trial.config.items())
        log.info("trial %s started: %s", trial.trial_id, settings)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        result = trial.last_result or {}
        log.info(
            "trial %s ended after %d epochs: %s %.4f (%d of %d ended)",
            trial.trial_id,
            # the run's own epoch counter: Tune's training_iteration restarts when a search resumes
            result.get("epoch", result.get("training_iteration", 0) - 1) + 1,
            self.metric,
            result.get(self.metric, math.nan),
            self.ended,
            self.total,
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        log.warning(
            "trial %s failed (%d of %d ended): %s; its log is in %s",
            trial.trial_id,
            self.ended,
            self.total,
            trial_failure(trial),
            trial.local_path,
        )


def trial_failure(trial: Any) -> str:
    """Why a trial failed, in one line: the alsoview error inside Ray's wrapping, else the first line."""
    try:
        error = trial_error(trial)
    except Exception as exc:  # storage may not have it yet
        return f"its error could not be read ({type(exc).__name__})"
    if error is None:
        return "no error recorded"
    return first_line(own_error_in(error) or error)


def trial_error(trial: Any) -> BaseException | None:
    """The error a trial failed with, as Tune recorded it.

    When Tune tells callbacks of the failure, it has written the error to the trial's local
    folder but not yet to its storage, where `get_pickled_error` looks: the local copy is read
    first (this process's Tune wrote it a moment ago)."""
    local = Path(trial.pickled_error_file) if getattr(trial, "pickled_error_file", None) else None
    if local is not None and local.is_file():
        import cloudpickle

        with open(local, "rb") as handle:
            return cloudpickle.load(handle)
    return trial.get_pickled_error()


class SearchWatch(Callback):
    """The stall rule for a search (stall.py), fed by Tune's own loop: trials that wait to be
    placed while none runs, for train.stall_timeout seconds (and still wait for resources, not
    for their actors to start), end the search with what waited and who holds the CPUs; so
    does a trial whose training stalled (its own watch stopped it), since the trials after it
    would wait for the same CPUs. A running trial is watched by its training's watch, so while
    one runs this clock rests."""

    def __init__(self, name: str, timeout: float, plan: ResourcePlan) -> None:
        self.name, self.timeout, self.plan = name, timeout, plan
        self.idle, self.trial_stalled = Idle(timeout), ""

    def setup(self, **info: Any) -> None:
        # a restored search unpickles this callback: its clock starts again with the search
        self.idle, self.trial_stalled = Idle(self.timeout), ""

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note_stall(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note_stall(trial)

    def _note_stall(self, trial: Any) -> None:
        try:
            error = _stall_in(trial_error(trial))
        except Exception:  # unreadable: TrialLog says so; it is not known to be a stall
            return
        if error is not None and not self.trial_stalled:
            line = str(error)
            if UNKNOWN_HOLDERS in line:  # the trial's process could not read Ray's state: this one may
                line = re.sub(rf"{UNKNOWN_HOLDERS} \([^)]*\)", lambda _: holders(), line)
            self.trial_stalled = f"trial {trial.trial_id}'s training stopped: {line}"

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.trial_stalled:
            raise StallError(f"{self.name} stalled: {self.trial_stalled}")
        waiting = sum(trial.status == "PENDING" for trial in trials)
        if not waiting or any(trial.status == "RUNNING" for trial in trials):
            self.idle.progressed()
        elif self.idle.stalled() and not waits_on_cluster():
            self.idle.progressed()  # their resources are granted: the trials' actors are starting
        elif self.idle.stalled():
            plan = self.plan
            gpu = " + 1 GPU" if plan.use_gpu else ""
            raise StallError(
                stalled_line(
                    self.name,
                    "no trial running",
                    self.timeout,
                    f"{waiting} trial(s) waited to be placed, each asking {plan.trial_cpus:g} CPU for its "
                    f"function, then {plan.workers} training worker(s) x {plan.cpus_per_worker:g} CPU{gpu}",
                    "free those CPUs",
                    plan.use_gpu,
                )
            )


def _stall_in(exc: BaseException | None) -> StallError | None:
    """The StallError a trial raised, as it raised it: Ray's wrapping of it is a StallError too
    (a class made for the task's error), whose message is Ray's traceback; the original is its
    `cause`."""
    found, seen = None, 0
    while exc is not None and seen < 20:
        if isinstance(exc, StallError):
            found = exc
        exc, seen = getattr(exc, "cause", None) or exc.__cause__, seen + 1
    return found


def claim_search(config: Config, name: str, setting: str) -> Any:
    """The search's lock (`<runs_dir>/<name>/.alsoview.lock`), held while it runs: two processes
    driving one Tune experiment would each restore it and write the same state and trials, so the
    second is refused in one line instead."""
    runs_dir = Path(with_absolute_paths(config).train.runs_dir).resolve()
    return storage.held_or_refused(
        runs_dir / name / RUN_LOCK,
        f"{setting}={name}",
        f"wait for that search to end (the same command then resumes it), or choose another {setting}",
    )


def fit_search(tuner: Any, trials: int) -> Any:
    """`tuner.fit()` for a search of `trials` trials; a search its SearchWatch stopped ends in the
    watch's line and how to resume (Tune's experiment state is kept, so the same command continues
    it). Tune answers Ctrl-C (or SIGUSR1) by saving its state and returning the trials so far as if
    the search had ended; that is an interrupt here (`_TuneInterruptWatch`), as is any trial not ended."""
    watch = _TuneInterruptWatch()
    try:
        grid = tuner.fit()
    except Exception as exc:
        stalled = _stall_in(exc)
        if stalled is not None:
            raise StallError(f"{stalled}; run the same command again to resume the search") from None
        raise
    finally:
        interrupted = watch.interrupted()
    ended = grid.num_terminated + grid.num_errors
    if interrupted or len(grid) < trials or ended < len(grid):
        raise KeyboardInterrupt(
            f"search stopped when {len(grid)} of its {trials} trials had started; run the same command again to "
            "resume it (the trials not finished continue from their checkpoints)"
        )
    return grid


class _TuneInterruptWatch:
    """Whether Tune's fit met a Ctrl-C. Tune installs its own SIGINT handler for the fit and, on the
    first signal, puts back the handler it found: this one, installed before the fit. So the
    handler in place after the fit tells which happened; a second Ctrl-C reaches this handler
    and raises at once, as Python's default would. (Only in the main thread, as Tune does.)"""

    def __init__(self) -> None:
        import signal
        import threading

        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            self.before = signal.signal(signal.SIGINT, self._again)

    @staticmethod
    def _again(number: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def interrupted(self) -> bool:
        import signal

        if not self.main:
            return False
        found = signal.signal(signal.SIGINT, signal.default_int_handler if self.before is None else self.before)
        return found == self._again


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def check_some_trial_ran(grid: Any) -> None:
    """A search whose every trial failed ends here, with the first trial's reason."""
    errors = [result.error for result in grid]
    if errors and all(error is not None for error in errors):
        cause = own_error_in(errors[0]) or errors[0]
        raise RunFailedError(f"every one of the {len(errors)} trials failed; the first: {first_line(cause, 1000)}")


def tune_config_of(config: Config) -> Config:
    """Trials train for tune.max_epochs when set; ASHA's grace period must fit in them."""
    epochs = config.tune.max_epochs or config.train.epochs
    if config.tune.grace_period > epochs:
        where = "tune.max_epochs" if config.tune.max_epochs else "train.epochs"
        raise UserError(
            f"config: tune.grace_period={config.tune.grace_period} is more than the {epochs} epochs a trial runs "
            f"({where}); lower tune.grace_period to at most {epochs}"
        )
    if config.tune.max_epochs is None:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=config.tune.max_epochs))


def tune(config: Config, catalog: Catalog | None = None, stage_seconds: dict[str, float] | None = None) -> TuneResult:
    """Run (or resume) the search; write trials.csv, best.json and the balance plot; then, unless
    tune.final is off, the final model in best/ and report.md (see `tune_finish.finish`).

    `stage_seconds`: stages the caller ran before (e.g. preparing the dataset), for the report.
    """
    require_trackers(config)
    with claim_search(config, config.tune.name, "tune.name"):
        return _tune_claimed(config, catalog, stage_seconds)


def _tune_claimed(config: Config, catalog: Catalog | None, stage_seconds: dict[str, float] | None) -> TuneResult:
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from alsoview.distributed.runtime import start_run

    stages = dict(stage_seconds or {})
    search_began = time.perf_counter()
    full = with_absolute_paths(config)  # the final run trains for train.epochs
    begun = start_run(tune_config_of(full), full.tune.name, catalog)  # trials train for tune.max_epochs
    config, catalog, run_dir = begun.config, begun.catalog, begun.run_dir
    storage = run_dir.parent

    plan = plan_resources(config, ray.cluster_resources(), "tune")
    metric = config.tune.metric
    trainable = trial_trainable(config, catalog, plan, run_dir)
    starts, start_notes = config.start_points()

    def start_search() -> Any:
        log.info(
            "tuning %d trials, %d at a time; metric %s; epochs per trial %d; resources: %s",
            plan.num_samples,
            plan.runs,
            metric,
            config.train.epochs,
            plan.summary(),
        )
        for note in start_notes:
            log.info("%s", note)
        log.info("the first %d trials run the start points (tune.start_points), then TPE searches", len(starts))
        return ray_tune.Tuner(
            trainable,
            param_space=param_space(config),
            tune_config=ray_tune.TuneConfig(
                search_alg=OptunaSearch(metric=metric, mode="max", seed=config.seed, points_to_evaluate=starts),
                scheduler=ASHAScheduler(
                    time_attr="training_iteration",
                    metric=metric,
                    mode="max",
                    max_t=config.train.epochs,
                    grace_period=config.tune.grace_period,
                    reduction_factor=config.tune.reduction_factor,
                ),
                num_samples=plan.num_samples,
                max_concurrent_trials=plan.runs,
            ),
            run_config=ray_tune.RunConfig(
                name=config.tune.name,
                storage_path=str(storage),
                # Tune's trial tables repeat what TrialLog and the epoch lines say, at length
                verbose=2 if verbose() else 0,
                callbacks=[
                    TrialLog(plan.num_samples, metric),
                    SearchWatch(config.tune.name, config.train.stall_timeout, plan),
                    *tune_callbacks(config),
                ],
                # A trial whose function is lost with its node is run again; its Train run
                # resumes from its last checkpoint (the same run name and storage).
                failure_config=ray_tune.FailureConfig(max_failures=config.train.max_failures),
            ),
        )

    tuner = restore_or_start(run_dir, trainable, start_search)
    grid = fit_search(tuner, plan.num_samples)
    check_some_trial_ran(grid)
    for trial_storage in sorted((run_dir / TRIAL_RUNS).glob("*")):
        prune_checkpoints(trial_storage, config.train.num_to_keep)
    result = write_outputs(run_dir, grid, config)
    stages["search"] = time.perf_counter() - search_began
    if full.tune.final:
        best_trial = run_dir / TRIAL_RUNS / trial_run_name(result.best["trial_id"])
        result.final = finish(run_dir, full, result.best, best_trial, catalog, stages)
    return result
