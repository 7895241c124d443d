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
    reused_trial: bool  # the best trial had already run train.epochs: no retraining


@dataclass
class TuneResult:
    run_dir: Path
    best: dict[str, Any]
    trials: pd.DataFrame
    final: FinalResult | None = None


def finish(
    run_dir: Path,
    config: Config,
    best: dict[str, Any],
    best_trial: Path,
    catalog: Catalog,
    stages: dict[str, float],
) -> FinalResult:
    """The best settings as a model: best/ (a run directory), its test evaluation, report.md.

    When the best trial (its Ray Train run in `best_trial`) already trained for train.epochs (or
    stopped itself early), its last checkpoint is the final model; otherwise the settings train
    again for train.epochs as the Ray Train run `best` (an interrupted job resumes it).
    """
    from alsoview.distributed.evaluate import evaluate_run
    from alsoview.distributed.train import train
    from alsoview.training import checkpoint as runs

    final_config = with_overrides(config, best["params"])
    final_config = dataclasses.replace(
        final_config, train=dataclasses.replace(final_config.train, runs_dir=str(run_dir), run_name=FINAL_RUN)
    )
    best_dir = run_dir / FINAL_RUN
    began = time.perf_counter()
    trial = _finished_trial(best_trial, final_config.train.epochs)
    if trial is not None:
        log.info("the best trial ran all %d epochs: its checkpoint is the final model", final_config.train.epochs)
        runs.write_run_outputs(runs.start_run_dir(final_config, best_dir), trial, final_config.data.prepared_dir)
    else:
        log.info("training the best settings for train.epochs=%d into %s", final_config.train.epochs, best_dir)
        train(final_config, catalog)
    stages["final model (the best trial's checkpoint)" if trial is not None else "final training"] = (
        time.perf_counter() - began
    )

    began = time.perf_counter()
    log.info("evaluating the final model on the test split against the baselines")
    evaluation = evaluate_run(best_dir, "test", config.tune.final_eval_users)
    stages["test evaluation"] = time.perf_counter() - began
    report = write_tuning_report(run_dir, best, best_dir, evaluation, stages)
    return FinalResult(best_dir, report, evaluation, reused_trial=trial is not None)


def _finished_trial(trial_storage: Path, epochs: int) -> Any:
    """The trial's last checkpoint when it trained `epochs` epochs or early-stopped itself, else None."""
    from alsoview.training import checkpoint as runs

    found = runs.latest_checkpoint(trial_storage)
    if found is None:
        return None
    _, saved = found
    last = saved.state.history[-1] if saved.state.history else {}
    finished = saved.state.epoch >= epochs - 1 or bool(last.get("early_stopped"))
    return saved if finished and saved.config.train.epochs == epochs else None


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
