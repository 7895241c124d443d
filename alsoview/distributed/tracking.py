"""Optional MLflow tracking (`tracking.mlflow=true`): thin glue around runs that already wrote
their files.

- `alsoview train`: once the run has finished, the driver logs one MLflow run named after
  `train.run_name` from the run directory (`log_train_run`): the flattened config as params,
  every epoch of history.csv as metrics (step = epoch), metrics.json's numbers as `final/*`
  metrics, and history.csv, metrics.json, config.yaml and learning_curves.png as artifacts.
  Logging after the fact keeps MLflow out of the workers and out of the training loop.
- `alsoview tune`: Ray Tune's `MLflowLoggerCallback` on the driver, one MLflow run per trial
  (`tune_callbacks`).

MLflow is optional: nothing here imports it (or Ray) until tracking is on, and a run that asks
for it without it installed stops before any work (`require_mlflow`). MLflow's usage telemetry
is off unless the environment turns it on (alsoview sends nothing anywhere by itself), and its
file store, which MLflow 3 keeps behind `MLFLOW_ALLOW_FILE_STORE`, is allowed unless the
environment says otherwise (the default store is one).
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from alsoview.config import Config, with_absolute_paths
from alsoview.errors import UserError, first_line
from alsoview.reporting.history import CURVES_FILE
from alsoview.training import checkpoint as runs

log = logging.getLogger("alsoview")

MISSING_MLFLOW = "tracking.mlflow=true needs MLflow: pip install mlflow-skinny"
RUN_DIR_TAG = "alsoview.run_dir"
FINAL_PREFIX = "final/"  # metrics.json's numbers, apart from the per-epoch history of the same names
# The run files logged as artifacts, those present.
ARTIFACTS = (runs.HISTORY_FILE, runs.METRICS_FILE, runs.CONFIG_FILE, CURVES_FILE)
# MLflow's batch limits (log_batch): at most 1000 metrics, 100 params, 1000 entities in all.
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
PARAM_CHARS = 6000  # MLflow's longest param value; config.yaml, an artifact, holds longer ones whole
# What MLflow allows in a metric or param name: letters, digits, _ - . space / (and : off Windows).
_NOT_IN_NAME = re.compile(r"[^\w\-. /]")


def mlflow_name(key: str) -> str:
    """A metric or param name MLflow accepts: `@` (in `valid/full/ndcg@10`) becomes `_at_`
    (`valid/full/ndcg_at_10`), anything else MLflow refuses becomes `_`."""
    return _NOT_IN_NAME.sub("_", key.replace("@", "_at_"))


def require_mlflow(config: Config) -> None:
    """Stop a run that asks for MLflow before any work when MLflow is not installed (one line)."""
    if config.tracking.mlflow:
        _mlflow()


def _mlflow() -> Any:
    """The mlflow module, its environment set first (telemetry off, the file store allowed)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return importlib.import_module("mlflow")
    except ImportError:
        raise UserError(MISSING_MLFLOW) from None


def ui_hint(uri: str) -> str:
    """How to look at the runs in `uri` (the line every logging step ends with)."""
    return f"mlflow ui --backend-store-uri {uri}"


# ---------------------------------------------------------------- alsoview train


def log_finished_run(run_dir: Path, config: Config) -> None:
    """`log_train_run` when tracking is on, for the end of `train()`. The run's own files are
    written by then, so an MLflow failure is one warning naming it, never a failed run."""
    if not config.tracking.mlflow:
        return
    try:
        log_train_run(run_dir, config)
    except Exception as exc:
        log.warning("mlflow: run %s not logged to %s: %s", run_dir.name, config.tracking.mlflow_uri, first_line(exc))


def log_train_run(run_dir: Path, config: Config) -> str:
    """Log a finished run directory as one MLflow run in `tracking.experiment`; its run id.

    Params: the config flattened to dotted keys (`sampling.also_view_fraction`; a value longer
    than MLflow takes is cut, config.yaml has it whole). Metrics: every
    numeric column of history.csv at step=epoch, names through `mlflow_name` (`@` -> `_at_`);
    metrics.json's numbers as `final/<name>`. Artifacts: `ARTIFACTS` that exist. Each call logs
    a new MLflow run (a resumed run's history holds every epoch again).
    """
    mlflow = _mlflow()
    from mlflow.entities import Metric, Param

    uri = _tracking_uri(config)
    client = mlflow.tracking.MlflowClient(uri)
    experiment_id = _experiment_id(client, config.tracking.experiment)
    run = client.create_run(
        experiment_id, run_name=config.train.run_name, tags={RUN_DIR_TAG: str(Path(run_dir).resolve())}
    )
    run_id = run.info.run_id
    try:
        params = [Param(mlflow_name(k), _param_value(v)) for k, v in flatten(config.to_dict()).items()]
        for chunk in _chunks(params, PARAMS_PER_BATCH):
            client.log_batch(run_id, params=chunk)
        timestamp = run.info.start_time
        metrics = [Metric(name, value, timestamp, step) for name, value, step in run_metrics(run_dir)]
        for chunk in _chunks(metrics, METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=chunk)
        for name in ARTIFACTS:
            if (Path(run_dir) / name).is_file():
                client.log_artifact(run_id, str(Path(run_dir) / name))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    log.info("mlflow: run %s in %s (%s)", run_id, uri, ui_hint(uri))
    return run_id


def run_metrics(run_dir: Path) -> list[tuple[str, float, int]]:
    """(MLflow name, value, step) of a run directory: history.csv's numeric cells at step=epoch,
    then metrics.json's numbers as `final/*` at the last epoch. Text cells (none today) and
    empty ones are not metrics; they stay in the logged files."""
    rows: list[tuple[str, float, int]] = []
    with open(Path(run_dir) / runs.HISTORY_FILE, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            step = int(float(record["epoch"]))
            rows += [(mlflow_name(k), v, step) for k, v in _numbers(record).items() if k != "epoch"]
    final = json.loads((Path(run_dir) / runs.METRICS_FILE).read_text(encoding="utf-8"))
    last = int(final.get("last_epoch", rows[-1][2] if rows else 0))
    rows += [(mlflow_name(FINAL_PREFIX + k), v, last) for k, v in _numbers(final).items()]
    return rows


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The values of a history row or metrics.json that are numbers (booleans as 0 and 1)."""
    found = {}
    for key, value in record.items():
        if isinstance(value, str):  # a csv cell
            try:
                value = _BOOLEANS[value] if value in _BOOLEANS else float(value)
            except ValueError:  # text, or empty: not a metric
                continue
        if isinstance(value, (bool, int, float)):
            found[key] = float(value)
    return found


_BOOLEANS = {"True": 1.0, "False": 0.0}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (`{"sampling": {"k": 4}}` -> `{"sampling.k": 4}`); lists and
    other values as they are."""
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= PARAM_CHARS else text[: PARAM_CHARS - 3] + "..."


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tracking_uri(config: Config) -> str:
    """The tracking URI as `paths.with_absolute_paths` resolves it (None: `<storage>/mlruns`)."""
    return str(with_absolute_paths(config).tracking.mlflow_uri)


# ---------------------------------------------------------------- alsoview tune


def tune_callbacks(config: Config) -> list[Any]:
    """Ray Tune callbacks for `config`'s tracking: an MLflow logger when tracking.mlflow is on
    (one MLflow run per trial, its search params and every reported result), else none."""
    if not config.tracking.mlflow:
        return []
    _mlflow()
    uri = _tracking_uri(config)
    callback = _tune_logger_class()(
        tracking_uri=uri, experiment_name=config.tracking.experiment, tags={"alsoview.tune": config.tune.name}
    )
    log.info("mlflow: every trial of %s as a run in %s (%s)", config.tune.name, uri, ui_hint(uri))
    return [callback]


@cache
def _tune_logger_class() -> type:
    """Ray's MLflowLoggerCallback with names MLflow accepts (`mlflow_name`): the stock callback
    hands MLflow `valid/full/ndcg@10` as it is, which MLflow refuses. Built on first use so this
    module imports no Ray; reachable as `tracking.MLflowTrialLogger`, so Tune's saved experiment
    pickles it by name."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.utils import flatten_dict

    class MLflowTrialLogger(MLflowLoggerCallback):
        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            named = {mlflow_name(k): v for k, v in flatten_dict(result).items()}
            super().log_trial_result(iteration, trial, named)

    MLflowTrialLogger.__module__ = __name__
    MLflowTrialLogger.__qualname__ = MLflowTrialLogger.__name__
    return MLflowTrialLogger


def __getattr__(name: str) -> Any:
    if name == "MLflowTrialLogger":
        return _tune_logger_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
