"""Optional experiment tracking (`tracking.mlflow=true`, `tracking.wandb=true`): thin glue around
runs that already wrote their files, to MLflow, to Weights & Biases, or to both.

- `alsoview train`: once the run has finished, the driver logs it from the run directory, one
  run per tracker named after `train.run_name`: the flattened config as params (`flat_params`),
  every epoch of history.csv as metrics (step = epoch), metrics.json's numbers as `final/*`
  (`run_metrics`), and the run's files (MLflow: history.csv, metrics.json, config.yaml and
  learning_curves.png as artifacts; W&B: learning_curves.png as an image). Logging after the
  fact keeps the trackers out of the workers and out of the training loop.
- `alsoview tune`: Ray Tune's `MLflowLoggerCallback` and `WandbLoggerCallback` on the driver,
  one run per trial (`tune_callbacks`).

Both trackers see the same names (`metric_name`: `valid/full/ndcg@10` -> `valid/full/ndcg_at_10`,
which MLflow requires). Neither is required: nothing here imports them (or Ray) until tracking is
on, and a run that asks for one without it installed stops before any work (`require_trackers`).
MLflow's usage telemetry is off unless the environment turns it on, and its file store, which
MLflow 3 keeps behind `MLFLOW_ALLOW_FILE_STORE`, is allowed unless the environment says otherwise
(the default store is one). W&B runs offline unless `tracking.wandb_mode=online` (its files wait
for `wandb sync`), with its error reporting, code and git capture and console capture off
(`wandb_environment`); alsoview never logs in to W&B.
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
from alsoview.distributed import ray_internals
from alsoview.errors import UserError, first_line
from alsoview.reporting.history import CURVES_FILE
from alsoview.training import checkpoint as runs

log = logging.getLogger("alsoview")

MISSING_MLFLOW = "tracking.mlflow=true needs MLflow: pip install mlflow-skinny"
MISSING_WANDB = "tracking.wandb=true needs W&B: pip install wandb"
# Set before W&B is imported, where the environment does not say otherwise: no crash reports, no
# copy of the code or git state, no console capture, no banner.
WANDB_ENVIRONMENT = {
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_DISABLE_SENTRY": "true",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_CONSOLE": "off",
}
WANDB_IMAGE = "learning_curves"  # learning_curves.png's name in a W&B run
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


def metric_name(key: str) -> str:
    """A metric or param name every tracker accepts, the same in each: `@` (in
    `valid/full/ndcg@10`) becomes `_at_` (`valid/full/ndcg_at_10`), anything else MLflow refuses
    becomes `_`."""
    return _NOT_IN_NAME.sub("_", key.replace("@", "_at_"))


def flat_params(config: Config) -> dict[str, Any]:
    """The config as one flat mapping of tracker names (`sampling.also_view_fraction`) to values,
    what both trackers log as a run's params."""
    return {metric_name(k): v for k, v in flatten(config.to_dict()).items()}


def _renamed(result: dict[str, Any]) -> dict[str, Any]:
    """A Tune result with its top-level names through `metric_name`; nested mappings (`config`)
    as they are, for the callback to flatten its own way."""
    return {metric_name(k) if not isinstance(v, dict) else k: v for k, v in result.items()}


def require_trackers(config: Config) -> None:
    """Stop a run that asks for MLflow or W&B before any work when it is not installed (one line)."""
    if config.tracking.mlflow:
        _mlflow()
    if config.tracking.wandb:
        _wandb(config.tracking.wandb_mode)


def _mlflow() -> Any:
    """The mlflow module, its environment set first (telemetry off, the file store allowed)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return importlib.import_module("mlflow")
    except ImportError:
        raise UserError(MISSING_MLFLOW) from None


def wandb_environment(mode: str | None) -> None:
    """Set W&B's environment before it is imported: `WANDB_ENVIRONMENT` where unset, and
    WANDB_MODE=offline when the config says offline (the config decides, not a stray variable;
    Ray's callback also reads it to skip asking for an API key)."""
    for key, value in WANDB_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if mode == "offline":
        os.environ["WANDB_MODE"] = "offline"


def _wandb(mode: str) -> Any:
    """The wandb module, its environment set first (`wandb_environment`)."""
    wandb_environment(mode)
    try:
        return importlib.import_module("wandb")
    except ImportError:
        raise UserError(MISSING_WANDB) from None


def ui_hint(uri: str) -> str:
    """How to look at the runs in `uri` (the line every logging step ends with)."""
    return f"mlflow ui --backend-store-uri {uri}"


# ---------------------------------------------------------------- alsoview train


def log_finished_run(run_dir: Path, config: Config) -> None:
    """`log_train_run` and `log_wandb_run` for the trackers that are on, for the end of
    `train()`. The run's own files are written by then, so a tracker failing is one warning
    naming it, never a failed run."""
    if config.tracking.mlflow:
        try:
            log_train_run(run_dir, config)
        except Exception as exc:
            where = config.tracking.mlflow_uri
            log.warning("mlflow: run %s not logged to %s: %s", run_dir.name, where, first_line(exc))
    if config.tracking.wandb:
        try:
            log_wandb_run(run_dir, config)
        except Exception as exc:
            log.warning("wandb: run %s not logged: %s", run_dir.name, first_line(exc))


def log_train_run(run_dir: Path, config: Config) -> str:
    """Log a finished run directory as one MLflow run in `tracking.experiment`; its run id.

    Params: the config flattened to dotted keys (`sampling.also_view_fraction`; a value longer
    than MLflow takes is cut, config.yaml has it whole). Metrics: every
    numeric column of history.csv at step=epoch, names through `metric_name` (`@` -> `_at_`);
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
        params = [Param(k, _param_value(v)) for k, v in flat_params(config).items()]
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
            rows += [(metric_name(k), v, step) for k, v in _numbers(record).items() if k != "epoch"]
    final = json.loads((Path(run_dir) / runs.METRICS_FILE).read_text(encoding="utf-8"))
    last = int(final.get("last_epoch", rows[-1][2] if rows else 0))
    rows += [(metric_name(FINAL_PREFIX + k), v, last) for k, v in _numbers(final).items()]
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


def log_wandb_run(run_dir: Path, config: Config) -> Path:
    """Log a finished run directory as one W&B run in `tracking.wandb_project`; its run folder.

    Config: `flat_params`. History: one `log` per epoch of history.csv at step=epoch (the
    numbers of `run_metrics`, learning_curves.png as the image `learning_curves` at the last
    epoch when present); summary: metrics.json's numbers as `final/<name>`. Offline (the
    default) it writes files only, for `wandb sync`. Each call logs a new W&B run.
    """
    tracking = with_absolute_paths(config).tracking
    wandb = _wandb(tracking.wandb_mode)
    folder = Path(str(tracking.wandb_dir))
    folder.mkdir(parents=True, exist_ok=True)
    history: dict[int, dict[str, Any]] = {}
    final: dict[str, float] = {}
    for name, value, step in run_metrics(run_dir):
        if name.startswith(FINAL_PREFIX):
            final[name] = value
        else:
            history.setdefault(step, {})[name] = value
    curves = Path(run_dir) / CURVES_FILE
    run = wandb.init(
        project=tracking.wandb_project,
        name=config.train.run_name,
        dir=str(folder),
        mode=tracking.wandb_mode,
        config=flat_params(config),
        notes=f"{RUN_DIR_TAG}={Path(run_dir).resolve()}",
    )
    try:
        last = max(history) if history else None
        for step in sorted(history):
            row = dict(history[step])
            if step == last and curves.is_file():
                row[WANDB_IMAGE] = wandb.Image(str(curves))
            run.log(row, step=step)
        run.summary.update(final)
    except Exception:
        run.finish(exit_code=1)
        raise
    run_folder = Path(run.dir).parent  # run.dir is the run's files/ folder
    url = run.url if tracking.wandb_mode == "online" else None
    run.finish()
    if url:
        log.info("wandb: run %s at %s", run_folder.name, url)
    else:
        log.info("wandb: offline run in %s (wandb sync %s)", folder, run_folder)
    return run_folder


# ---------------------------------------------------------------- alsoview tune


def tune_callbacks(config: Config) -> list[Any]:
    """Ray Tune callbacks for `config`'s tracking: an MLflow logger when tracking.mlflow is on, a
    W&B logger when tracking.wandb is on (each one run per trial: its search params and every
    reported result), else none."""
    callbacks: list[Any] = []
    if config.tracking.mlflow:
        _mlflow()
        uri = _tracking_uri(config)
        callbacks.append(
            _tune_logger_class()(
                tracking_uri=uri, experiment_name=config.tracking.experiment, tags={"alsoview.tune": config.tune.name}
            )
        )
        log.info("mlflow: every trial of %s as a run in %s (%s)", config.tune.name, uri, ui_hint(uri))
    if config.tracking.wandb:
        tracking = with_absolute_paths(config).tracking
        _wandb(tracking.wandb_mode)
        Path(str(tracking.wandb_dir)).mkdir(parents=True, exist_ok=True)
        callbacks.append(
            _wandb_logger_class()(
                project=tracking.wandb_project,
                group=config.tune.name,
                mode=tracking.wandb_mode,
                dir=str(tracking.wandb_dir),
            )
        )
        where = "offline" if tracking.wandb_mode == "offline" else "online"
        log.info("wandb: every trial of %s as a run, %s, in %s", config.tune.name, where, tracking.wandb_dir)
    return callbacks


@cache
def _tune_logger_class() -> type:
    """Ray's MLflowLoggerCallback with names MLflow accepts (`metric_name`): the stock callback
    hands MLflow `valid/full/ndcg@10` as it is, which MLflow refuses. Built on first use so this
    module imports no Ray; reachable as `tracking.MLflowTrialLogger`, so Tune's saved experiment
    pickles it by name."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.utils import flatten_dict

    class MLflowTrialLogger(MLflowLoggerCallback):
        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, _renamed(flatten_dict(result)))

    return _by_name(MLflowTrialLogger)


@cache
def _wandb_logger_class() -> type:
    """Ray's WandbLoggerCallback with the names MLflow gets (`metric_name`), whose logging actor
    (one per trial, on the driver's node) sets W&B's environment before importing it
    (`wandb_environment`): Ray hands that actor only the API key. Reachable by name like
    `MLflowTrialLogger`."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    from alsoview.distributed.ray_internals import use_wandb_logging_actor, wandb_logging_actor

    class WandbTrialActor(wandb_logging_actor()):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            wandb_environment(kwargs.get("mode"))
            super().__init__(*args, **kwargs)

    class WandbTrialLogger(WandbLoggerCallback):
        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, _renamed(result))

    use_wandb_logging_actor(WandbTrialLogger, _by_name(WandbTrialActor))
    return _by_name(WandbTrialLogger)


def _by_name(cls: type) -> type:
    """`cls` as an attribute of this module (see `__getattr__`), so pickle finds it by name."""
    cls.__module__ = __name__
    cls.__qualname__ = cls.__name__
    return cls


_LAZY_CLASSES = {
    "MLflowTrialLogger": lambda: _tune_logger_class(),
    "WandbTrialLogger": lambda: _wandb_logger_class(),
    "WandbTrialActor": lambda: getattr(_wandb_logger_class(), ray_internals.WANDB_ACTOR_ATTRIBUTE),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_CLASSES:
        return _LAZY_CLASSES[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
