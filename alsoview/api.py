"""The Python API: the commands of the CLI as functions, for notebooks and scripts.

Each function does what its command does, with the same checks and the same outputs on disk, and
returns what the command prints as objects instead of text:

    from alsoview import load_config, train, evaluate, Recommender

    config = load_config("configs/smoke.yaml", overrides=["train.run_name=demo"])
    run = train(config)                      # prepares the dataset first when needed
    scores = evaluate(run.run_dir)           # the model and every baseline on the test split
    recommender = Recommender.from_run(run.run_dir)
    top = recommender.recommend(["A2HD75EMZR8QLN"], k=5)
    for_visitor, fallback = recommender.recommend_items(["B0LVWB28OK", "B0ZEVPFEES"], k=5)

Errors are the CLI's: a `UserError` for a mistake (its message is the CLI's one line), a
`RunFailedError` for a run that failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from alsoview.config import Config, with_absolute_paths
from alsoview.config import load_config as _load_config_files
from alsoview.distributed.evaluate import evaluate_run
from alsoview.distributed.prepare import PrepareResult, ensure_prepared, with_default_inputs
from alsoview.distributed.prepare import prepare as _prepare
from alsoview.distributed.recommend import Recommender
from alsoview.distributed.train import TrainResult
from alsoview.distributed.train import train as _train
from alsoview.distributed.tune import tune as _tune
from alsoview.distributed.tune_finish import TuneResult

__all__ = ["Config", "Recommender", "evaluate", "load_config", "prepare", "train", "tune"]


def load_config(*files: str | Path, overrides: Sequence[str] = ()) -> Config:
    """A validated config from YAML files (each refining the one before) and `key=value`
    overrides, its relative output paths resolved against the storage root, as the CLI reads it.
    No files: the built-in defaults (the original design on the generated dataset)."""
    config = _load_config_files([str(f) for f in files] or None, list(overrides))
    config.validate()
    return with_absolute_paths(config)


def prepare(config: Config) -> PrepareResult:
    """`alsoview prepare`: the prepared dataset at `config.data.prepared_dir` (the generated
    default when `data.reviews` is empty), written again even when one is there."""
    return _prepare(with_default_inputs(config))


def train(config: Config) -> TrainResult:
    """`alsoview train`: prepares the dataset when it is missing or stale, then trains under Ray
    Train; the same `train.run_name` resumes. Returns the run directory and its metrics."""
    return _train(ensure_prepared(config))


def tune(config: Config) -> TuneResult:
    """`alsoview tune`: the search, then (unless `tune.final` is off) the best settings as the
    final model in `best/`, tested and reported."""
    return _tune(ensure_prepared(config))


def evaluate(
    run: str | Path, split: str = "test", max_users: int | None = None, actors: int = 1
) -> dict[str, dict[str, float]]:
    """`alsoview evaluate`: the run's model and every baseline and peer on every protocol,
    `{scorer: {metric: value}}`; also written to the run's evaluation.json and evaluation.md."""
    return evaluate_run(run, split, max_users, actors=actors)
