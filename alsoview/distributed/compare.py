"""`alsoview compare`: does mixing also-view negatives help, and at which balance?

One model per (also-view fraction, seed), all with the same config and epoch budget, trained as
a Ray Tune grid (trials run side by side as the cluster allows; the same name resumes), then
every model and the baselines are scored on the same test cases and protocols.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alsoview.config import Config, check_plain_name
from alsoview.distributed.evaluate import ModelFactory, evaluate_scorers
from alsoview.errors import RunFailedError, UserError, first_line, own_error_in
from alsoview.evaluation.protocols import build_cases, reference_scorers
from alsoview.logs import verbose
from alsoview.reporting.comparison import CompareResult, write_compare_report
from alsoview.training import checkpoint as runs

log = logging.getLogger("alsoview")


def parse_fractions(text: str) -> list[float]:
    try:
        fractions = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--fractions must be comma-separated numbers, got {text!r}") from None
    if not fractions or any(not 0 <= f <= 1 for f in fractions):
        raise UserError(f"--fractions must be numbers in [0, 1], got {text!r}")
    return fractions


def compare(
    config: Config, fractions: list[float], seeds: int, name: str = "compare", max_users: int | None = None
) -> CompareResult:
    """Train the grid fractions x seeds, evaluate every model and the baselines, write the report."""
    from alsoview.distributed.tune import claim_search

    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    check_plain_name(name, "--name")
    with claim_search(config, name, "--name"):
        return _compare_claimed(config, fractions, seeds, name, max_users)


def _compare_claimed(
    config: Config, fractions: list[float], seeds: int, name: str, max_users: int | None
) -> CompareResult:
    import ray
    import ray.train
    from ray import tune as ray_tune

    from alsoview.distributed.resources import plan_resources
    from alsoview.distributed.runtime import start_run
    from alsoview.distributed.tune import (
        SearchWatch,
        TrialLog,
        check_some_trial_ran,
        fit_search,
        restore_or_start,
        trial_trainable,
    )

    begun = start_run(config, name)
    config, catalog, run_dir = begun.config, begun.catalog, begun.run_dir

    grid_size = len(fractions) * seeds
    plan = plan_resources(_with_samples(config, grid_size), ray.cluster_resources(), "compare")
    trainable = trial_trainable(config, catalog, plan, run_dir)

    def start_grid() -> Any:
        log.info(
            "comparing also-view fractions %s x %d seeds: %d models of %d epochs, %d at a time; resources: %s",
            fractions,
            seeds,
            grid_size,
            config.train.epochs,
            plan.runs,
            plan.summary(),
        )
        return ray_tune.Tuner(
            trainable,
            param_space={
                "sampling.also_view_fraction": ray_tune.grid_search(fractions),
                "seed": ray_tune.grid_search(list(range(config.seed, config.seed + seeds))),
            },
            tune_config=ray_tune.TuneConfig(max_concurrent_trials=plan.runs),
            run_config=ray_tune.RunConfig(
                name=name,
                storage_path=str(Path(config.train.runs_dir)),
                verbose=2 if verbose() else 0,  # TrialLog's lines instead of Tune's tables
                callbacks=[
                    TrialLog(grid_size, config.train.early_stopping_metric),
                    SearchWatch(name, config.train.stall_timeout, plan),
                ],
            ),
        )

    tuner = restore_or_start(run_dir, trainable, start_grid)
    grid = fit_search(tuner, grid_size)
    check_some_trial_ran(grid)

    known = catalog.inputs_for("test")  # the validation items are known to every scorer
    scorers: dict[str, Any] = {}
    trained: dict[str, dict[str, Any]] = {}
    for result in grid:
        # Train's TuneReportCallback passes the trial's latest Train checkpoint as a path in the metrics.
        path = (result.metrics or {}).get("checkpoint_path")
        if result.error is not None or path is None:
            cause = own_error_in(result.error) or result.error
            why = first_line(cause, 1000) if cause is not None else "no checkpoint reported"
            failed = UserError if isinstance(cause, UserError) else RunFailedError
            raise failed(f"comparison trial {result.config} failed: {why}")
        with ray.train.Checkpoint(path).as_directory() as folder:
            saved = runs.load_checkpoint(folder)
        key = f"model f={result.config['sampling.also_view_fraction']:g} seed={result.config['seed']}"
        scorers[key] = ModelFactory(saved.state.best_model_state, saved.config, known)
        trained[key] = {
            "fraction": result.config["sampling.also_view_fraction"],
            "seed": result.config["seed"],
            "best_epoch": saved.state.best_epoch,
            "epochs": len(saved.state.history),
        }
    references = reference_scorers(known, config.seed)
    cases = build_cases(catalog, "test", config.seed, max_users)
    results = evaluate_scorers({**scorers, **references.scorers}, cases, stall_timeout=config.train.stall_timeout)
    return write_compare_report(run_dir, trained, results, list(references.scorers), cases.split, references.skipped)


def _with_samples(config: Config, samples: int) -> Config:
    """The config with tune.num_samples set to the grid's size, for planning its concurrency."""
    import dataclasses

    return dataclasses.replace(config, tune=dataclasses.replace(config.tune, num_samples=samples))
