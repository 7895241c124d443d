"""Optional MLflow tracking (tracking.*): the config section, a finished run logged from its run
directory, and the Tune callback, all against MLflow's local file store (no server, no network)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from alsoview.config import load_config, save_config, with_absolute_paths
from alsoview.errors import UserError

# Set before any test imports MLflow: its usage telemetry would reach out to the network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

EPOCHS = 3
METRIC = "valid/full/ndcg@10"


def _config(store: Path, *extra: str):
    return load_config(None, ["tracking.mlflow=true", f"tracking.mlflow_uri={store}", "train.run_name=r1", *extra])


def _run_dir(folder: Path, config) -> Path:
    """A run directory as `write_run_outputs` leaves it: history.csv, metrics.json, config.yaml."""
    folder.mkdir(parents=True)
    header = ["valid/auc", METRIC, "epoch", "train/loss", "best/epoch", "early_stopped", "resumed_from_epoch"]
    rows = [[0.6 + e / 100, 0.1 + e / 100, e, 0.5 - e / 100, e, False, -1] for e in range(EPOCHS)]
    (folder / "history.csv").write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    metrics = {"valid/auc": 0.62, METRIC: 0.12, "epochs_total": EPOCHS, "last_epoch": EPOCHS - 1}
    metrics |= {"early_stopped": False, "model": "model.pt holds the weights of best/epoch", "dataset": "/d"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    save_config(config, folder / "config.yaml")
    return folder


# ---------------------------------------------------------------- the config


def test_tracking_is_off_by_default_and_resolves_under_storage(tmp_path):
    config = load_config(None, [f"storage={tmp_path}"])
    assert config.tracking.mlflow is False and config.tracking.experiment == "alsoview"
    assert with_absolute_paths(config).tracking.mlflow_uri == (tmp_path / "mlruns").resolve().as_uri()


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("elsewhere/ml", "{root}/elsewhere/ml"),  # relative: under the storage root, like runs_dir
        ("file:rel/ml", "{root}/rel/ml"),
        ("/abs/ml", "/abs/ml"),
        ("file:///abs/ml", "/abs/ml"),
    ],
)
def test_file_stores_resolve_to_absolute_file_uris(tmp_path, uri, expected):
    config = with_absolute_paths(load_config(None, [f"storage={tmp_path}", f"tracking.mlflow_uri={uri}"]))
    want = Path(expected.format(root=tmp_path.resolve())).as_uri()
    assert config.tracking.mlflow_uri == want
    assert with_absolute_paths(config).tracking.mlflow_uri == want  # idempotent


def test_other_tracking_uris_pass_as_they_are(tmp_path):
    config = with_absolute_paths(load_config(None, ["tracking.mlflow_uri=http://127.0.0.1:5000"]))
    assert config.tracking.mlflow_uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "override, message",
    [
        ("tracking.mlflow=maybe", "tracking.mlflow must be bool"),
        ('tracking.mlflow_uri=""', "tracking.mlflow_uri must be a path or an MLflow tracking URI, on one line"),
        ("tracking.mlflow_uri=file://otherhost/ml", "tracking.mlflow_uri must be a file: URI of this machine"),
        ('tracking.experiment=""', "tracking.experiment must be a name of 1 to 256 characters"),
        ("tracking.experiment=" + "x" * 257, "tracking.experiment must be a name of 1 to 256 characters"),
        ("tracking.server=http://x", "tracking.server"),
    ],
)
def test_bad_tracking_settings_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message) as caught:
        load_config(None, [override])
    assert "\n" not in str(caught.value)


def test_mlflow_asked_for_but_missing_is_one_line(monkeypatch, tmp_path):
    from alsoview.distributed import tracking

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    config = _config(tmp_path / "mlruns")
    for check in (tracking.require_trackers, tracking.tune_callbacks):
        with pytest.raises(UserError) as caught:
            check(config)
        assert str(caught.value) == "tracking.mlflow=true needs MLflow: pip install mlflow-skinny"
    tracking.require_trackers(load_config())  # off: MLflow is never asked for
    assert tracking.tune_callbacks(load_config()) == []


# ---------------------------------------------------------------- alsoview train


def test_metric_names_replace_at():
    from alsoview.distributed.tracking import metric_name

    assert metric_name("valid/full/ndcg@10") == "valid/full/ndcg_at_10"
    assert metric_name("train/loss") == "train/loss" and metric_name("a:b@c") == "a_b_at_c"


def test_a_finished_run_is_one_mlflow_run(tmp_path, caplog):
    mlflow = pytest.importorskip("mlflow")
    from alsoview.distributed.tracking import RUN_DIR_TAG, log_train_run

    store = tmp_path / "mlruns"
    config = _config(store, "sampling.also_view_fraction=0.25")
    run_dir = _run_dir(tmp_path / "runs" / "r1", config)
    with caplog.at_level("INFO", logger="alsoview"):
        run_id = log_train_run(run_dir, config)

    uri = store.resolve().as_uri()
    client = mlflow.tracking.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "r1" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "alsoview"
    assert run.data.tags[RUN_DIR_TAG] == str(run_dir.resolve())
    assert run.data.params["sampling.also_view_fraction"] == "0.25"
    assert run.data.params["train.run_name"] == "r1" and run.data.params["tracking.mlflow"] == "True"
    for name in ("valid/full/ndcg_at_10", "valid/auc", "train/loss", "early_stopped"):
        history = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in history) == list(range(EPOCHS)), name
    ndcg = {m.step: m.value for m in client.get_metric_history(run_id, "valid/full/ndcg_at_10")}
    assert ndcg == pytest.approx({e: 0.1 + e / 100 for e in range(EPOCHS)})
    assert "epoch" not in run.data.metrics  # the step, not a metric
    assert run.data.metrics["final/valid/full/ndcg_at_10"] == pytest.approx(0.12)
    assert run.data.metrics["final/epochs_total"] == EPOCHS and run.data.metrics["final/early_stopped"] == 0
    assert {a.path for a in client.list_artifacts(run_id)} == {"history.csv", "metrics.json", "config.yaml"}
    assert f"mlflow: run {run_id} in {uri} (mlflow ui --backend-store-uri {uri})" in caplog.text


def test_learning_curves_are_logged_when_present_and_runs_add_up(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from alsoview.distributed.tracking import log_train_run

    store = tmp_path / "mlruns"
    config = _config(store, "tracking.experiment=curves")
    run_dir = _run_dir(tmp_path / "r1", config)
    (run_dir / "learning_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    first, second = log_train_run(run_dir, config), log_train_run(run_dir, config)
    client = mlflow.tracking.MlflowClient(store.resolve().as_uri())
    assert "learning_curves.png" in {a.path for a in client.list_artifacts(first)}
    experiment = client.get_experiment_by_name("curves")
    assert {r.info.run_id for r in client.search_runs([experiment.experiment_id])} == {first, second}


def test_a_failed_log_is_a_warning_not_a_failed_run(tmp_path, caplog):
    pytest.importorskip("mlflow")
    from alsoview.distributed.tracking import log_finished_run

    config = _config(tmp_path / "mlruns")
    empty = tmp_path / "r1"
    empty.mkdir()  # no history.csv
    with caplog.at_level("WARNING", logger="alsoview"):
        log_finished_run(empty, config)
    assert "mlflow: run r1 not logged" in caplog.text and "history.csv" in caplog.text
    log_finished_run(empty, load_config())  # off: nothing happens


# ---------------------------------------------------------------- alsoview tune


def test_tune_gets_an_mlflow_logger_with_the_configured_store(tmp_path):
    pytest.importorskip("mlflow")
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from alsoview.distributed.tracking import tune_callbacks

    store = tmp_path / "mlruns"
    callbacks = tune_callbacks(_config(store, "tracking.experiment=search", "tune.name=t1"))
    assert len(callbacks) == 1 and isinstance(callbacks[0], MLflowLoggerCallback)
    assert callbacks[0].tracking_uri == store.resolve().as_uri()
    assert callbacks[0].experiment_name == "search" and callbacks[0].tags == {"alsoview.tune": "t1"}


def test_the_tune_logger_pickles_by_name_and_renames_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import ray.cloudpickle

    from alsoview.distributed import tracking

    callback = tracking.tune_callbacks(_config(tmp_path / "mlruns"))[0]
    assert type(ray.cloudpickle.loads(ray.cloudpickle.dumps(callback))) is type(callback)
    assert tracking.MLflowTrialLogger is type(callback)
    logged = {}
    callback._trial_runs = {"trial": "run-1"}
    monkeypatch.setattr(
        callback.mlflow_util, "log_metrics", lambda run_id, metrics_to_log, step: logged.update(metrics_to_log)
    )
    callback.log_trial_result(1, "trial", {METRIC: 0.3, "training_iteration": 1, "config": {"a.b": 2}})
    assert logged == {"valid/full/ndcg_at_10": 0.3, "training_iteration": 1, "config/a.b": 2}
