"""Finishing a tuning job: the search's outputs, then the best settings as the final model.

After `tune.tune`'s search: trials.csv, best.json and the balance plot (`write_outputs`); then,
unless tune.final is off, the final model in best/, its test evaluation and report.md (`finish`).
The files themselves are drawn and written by `alsoview.reporting`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from alsoview.config import Config, with_overrides
from alsoview.data.catalog import Catalog
from alsoview.reporting.plots import plot_balance
from alsoview.reporting.tuning import BALANCE_FILE, TRIALS_FILE, write_trials_csv, write_tuning_report
from alsoview.training.checkpoint import plain

log = logging.getLogger("alsoview")

FINAL_RUN = "best"  # <tuning run>/best/: the final model, a run directory like any other


@dataclass
class FinalResult:
    """The best settings trained to the end, tested, and reported."""

    best_dir: Path
    report: Path
    evaluation: dict[str, dict[str, float]]
    plan: "FinalPlan"  # how the final model came from the best trial


@dataclass
class TuneResult:
    run_dir: Path
    best: dict[str, Any]
    trials: pd.DataFrame
    final: FinalResult | None = None


@dataclass(frozen=True)
class FinalPlan:
    """How the final model comes from the best trial: its checkpoint as it is (`reuse`: it stopped
    itself early, or ran train.epochs), the trial trained on from its checkpoint to train.epochs
    (`continue`: it ran the trials' shorter budget), or the settings trained afresh (`retrain`:
    no checkpoint of it loads)."""

    kind: str  # "reuse", "continue" or "retrain"
    why: str  # one line for the log and the report
    checkpoint: Path | None = None  # the trial's newest checkpoint folder
    saved: Any = None  # its SavedCheckpoint


def final_plan(trial_storage: Path, epochs: int) -> FinalPlan:
    """What the final stage does with the best trial (its Ray Train run in `trial_storage`)."""
    from alsoview.training import checkpoint as runs

    found = runs.latest_checkpoint(trial_storage)
    if found is None:
        return FinalPlan("retrain", "the best trial left no checkpoint: the best settings train from the start")
    folder, saved = found
    state = saved.state
    last = state.history[-1] if state.history else {}
    ran = f"ran {state.epoch + 1} epochs (best epoch {state.best_epoch})"
    if last.get("early_stopped"):
        return FinalPlan(
            "reuse",
            f"the best trial stopped itself early: it {ran}; its best weights are the final model",
            folder,
            saved,
        )
    if state.epoch >= epochs - 1:
        return FinalPlan(
            "reuse",
            f"the best trial {ran}, all of train.epochs={epochs}: its best weights are the final model",
            folder,
            saved,
        )
    why = f"the best trial {ran} of train.epochs={epochs}: the final model trains on from its checkpoint"
    return FinalPlan("continue", why, folder, saved)


def finish(
    run_dir: Path,
    config: Config,
    best: dict[str, Any],
    best_trial: Path,
    catalog: Catalog,
    stages: dict[str, float],
) -> FinalResult:
    """The best settings as a model: best/ (a run directory), its test evaluation, report.md;
    from the best trial's checkpoint as far as it goes (`final_plan`). An interrupted job resumes
    the final training from best/'s own checkpoints."""
    from alsoview.distributed.evaluate import evaluate_run
    from alsoview.distributed.train import train, write_curves
    from alsoview.training import checkpoint as runs

    final_config = with_overrides(config, best["params"])
    final_config = dataclasses.replace(
        final_config, train=dataclasses.replace(final_config.train, runs_dir=str(run_dir), run_name=FINAL_RUN)
    )
    best_dir = run_dir / FINAL_RUN
    began = time.perf_counter()
    plan = final_plan(best_trial, final_config.train.epochs)
    log.info("%s", plan.why)
    if plan.kind == "reuse":
        runs.write_run_outputs(runs.start_run_dir(final_config, best_dir), plan.saved, final_config.data.prepared_dir)
        log.info("%s", write_curves(best_dir, final_config, plan.saved.state.history))  # as train() does
    else:
        if plan.kind == "continue" and not runs.checkpoint_dirs(best_dir):
            best_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(plan.checkpoint, best_dir / plan.checkpoint.name)  # train resumes from it
        train(final_config, catalog)
    stage = {"reuse": "final model (the best trial's checkpoint)", "continue": "final training (from the best trial)"}
    stages[stage.get(plan.kind, "final training")] = time.perf_counter() - began

    began = time.perf_counter()
    log.info("evaluating the final model on the test split against the baselines")
    evaluation = evaluate_run(best_dir, "test", config.tune.final_eval_users)
    stages["test evaluation"] = time.perf_counter() - began
    report = write_tuning_report(run_dir, best, best_dir, evaluation, stages, plan.why)
    return FinalResult(best_dir, report, evaluation, plan)


def write_outputs(run_dir: Path, grid: Any, config: Config) -> TuneResult:
    """trials.csv (every trial's parameters and final metrics), best.json, the balance plot."""
    metric = config.tune.metric
    status = {r.metrics.get("trial_id"): _status(r, config.train.epochs) for r in grid if r.metrics}
    trials = write_trials_csv(grid.get_dataframe(), status, metric, run_dir / TRIALS_FILE)

    best_result = grid.get_best_result(metric=metric, mode="max", scope="all")
    best = {
        "trial_id": best_result.metrics.get("trial_id"),
        "metric": metric,
        "value": _best_value(best_result, metric),
        "params": plain(dict(best_result.config)),
        "last_metrics": {
            k: plain(v)
            for k, v in (best_result.metrics or {}).items()
            if k.startswith(("valid/", "train/", "best/")) or k == "training_iteration"
        },
        "trials": len(trials),
        "trials_completed": int((trials["status"] == "completed").sum()),
        "trials_stopped_early": int((trials["status"] == "stopped early").sum()),
        "trials_failed": int((trials["status"] == "failed").sum()),
    }
    (run_dir / "best.json").write_text(json.dumps(best, indent=2) + "\n")
    plot_balance(trials, metric, run_dir / BALANCE_FILE)
    return TuneResult(run_dir, best, trials)


def _status(result: Any, epochs: int) -> str:
    """failed, completed (all epochs, or its own early stopping), or stopped early (by ASHA)."""
    if result.error is not None:
        return "failed"
    metrics = result.metrics or {}
    # Our own epoch counter, not Tune's training_iteration (which a restored trial may not continue).
    finished = metrics.get("early_stopped") or metrics.get("epoch") == epochs - 1
    return "completed" if finished else "stopped early"


def _best_value(result: Any, metric: str) -> float:
    history = result.metrics_dataframe
    if history is not None and metric in history:
        return float(history[metric].max())
    return float((result.metrics or {}).get(metric, math.nan))
