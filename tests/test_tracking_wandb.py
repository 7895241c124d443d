"""Optional W&B tracking (tracking.wandb*): the config keys, a finished run logged from its run
directory, and the Tune callback, all in W&B's offline mode into tmp_path (no login, no network)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from alsoview.config import load_config, with_absolute_paths
from alsoview.distributed.tracking import WANDB_ENVIRONMENT
from alsoview.errors import UserError
from tests.test_tracking import EPOCHS, _run_dir

# W&B's environment, set before any test imports it: offline, silent, nothing captured or reported.
QUIET = {"WANDB_MODE": "offline", **WANDB_ENVIRONMENT}


@pytest.fixture
def offline(monkeypatch):
    for key, value in QUIET.items():
        monkeypatch.setenv(key, value)


def _config(folder: Path, *extra: str):
    return load_config(None, ["tracking.wandb=true", f"tracking.wandb_dir={folder}", "train.run_name=r1", *extra])


# ---------------------------------------------------------------- the config


def test_wandb_is_off_and_offline_by_default_and_resolves_under_storage(tmp_path):
    config = load_config(None, [f"storage={tmp_path}"])
    tracking = config.tracking
    assert tracking.wandb is False and tracking.wandb_mode == "offline" and tracking.wandb_project == "alsoview"
    assert with_absolute_paths(config).tracking.wandb_dir == str((tmp_path / "wandb").resolve())
    relative = with_absolute_paths(load_config(None, [f"storage={tmp_path}", "tracking.wandb_dir=w/b"]))
    assert relative.tracking.wandb_dir == str((tmp_path / "w" / "b").resolve())
    assert with_absolute_paths(relative).tracking.wandb_dir == relative.tracking.wandb_dir  # idempotent


@pytest.mark.parametrize(
    "override, message",
    [
        ("tracking.wandb=maybe", "tracking.wandb must be bool"),
        ("tracking.wandb_mode=disabled", r"tracking.wandb_mode must be one of \('offline', 'online'\)"),
        ('tracking.wandb_project=""', "tracking.wandb_project must be a name of 1 to 128 characters"),
        ("tracking.wandb_project=a/b", "tracking.wandb_project must be a name of 1 to 128 characters"),
        ("tracking.wandb_project=" + "x" * 129, "tracking.wandb_project must be a name of 1 to 128"),
        ('tracking.wandb_dir=""', "tracking.wandb_dir must be a path on one line"),
    ],
)
def test_bad_wandb_settings_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message) as caught:
        load_config(None, [override])
    assert "\n" not in str(caught.value)


def test_wandb_asked_for_but_missing_is_one_line(monkeypatch, offline, tmp_path):
    from alsoview.distributed import tracking

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    config = _config(tmp_path / "wandb")
    for check in (tracking.require_trackers, tracking.tune_callbacks):
        with pytest.raises(UserError) as caught:
            check(config)
        assert str(caught.value) == "tracking.wandb=true needs W&B: pip install wandb"
    tracking.require_trackers(load_config())  # off: W&B is never asked for


def test_both_trackers_share_names_and_params():
    from alsoview.distributed.tracking import flat_params

    params = flat_params(load_config(None, ["sampling.also_view_fraction=0.25"]))
    assert params["sampling.also_view_fraction"] == 0.25
    assert params["train.early_stopping_metric"] == "valid/full/ndcg@10"  # values as they are
    assert all("@" not in name for name in params)


# ---------------------------------------------------------------- alsoview train


def test_a_finished_run_is_one_offline_wandb_run(tmp_path, offline, caplog):
    pytest.importorskip("wandb")
    from alsoview.distributed.tracking import log_wandb_run

    folder = tmp_path / "wandb"
    config = _config(folder, "sampling.also_view_fraction=0.25")
    run_dir = _run_dir(tmp_path / "runs" / "r1", config)
    with caplog.at_level("INFO", logger="alsoview"):
        run_folder = log_wandb_run(run_dir, config)

    assert run_folder.is_dir() and run_folder.name.startswith("offline-run-")
    assert folder.resolve() in run_folder.parents
    (records,) = run_folder.glob("*.wandb")
    data = _written(records, b"final/valid/full/ndcg_at_10")
    for name in ("valid/full/ndcg_at_10", "valid/auc", "train/loss", "final/valid/full/ndcg_at_10"):
        assert name.encode() in data, name
    assert b"sampling.also_view_fraction" in data
    assert f"wandb: offline run in {folder.resolve()} (wandb sync {run_folder})" in caplog.text


def _written(records, last: bytes, patience: float = 120.0) -> bytes:
    """The run file's bytes once `last` is in them: W&B's own service process writes the file
    and can still be flushing it when `finish()` has returned, on a loaded machine."""
    import time

    deadline = time.monotonic() + patience
    data = records.read_bytes()
    while last not in data and time.monotonic() < deadline:
        time.sleep(0.5)
        data = records.read_bytes()
    return data


class _FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.logged: list[tuple[int, dict]] = []
        self.summary: dict = {}
        self.dir = str(Path(kwargs["dir"]) / "wandb" / "offline-run-x" / "files")
        self.url = "https://wandb.invalid/run"
        self.finished: list[int] = []

    def log(self, row, step):
        self.logged.append((step, row))

    def finish(self, exit_code=0):
        self.finished.append(exit_code)


def test_every_epoch_is_one_step_with_the_curves_at_the_last(tmp_path, offline, monkeypatch):
    from alsoview.distributed.tracking import log_wandb_run

    runs: list[_FakeRun] = []

    def init(**kwargs):
        runs.append(_FakeRun(**kwargs))
        return runs[-1]

    fake = types.SimpleNamespace(init=init, Image=lambda path: ("image", path))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = _config(tmp_path / "wandb", "tracking.wandb_project=p1")
    run_dir = _run_dir(tmp_path / "r1", config)
    (run_dir / "learning_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    log_wandb_run(run_dir, config)

    (run,) = runs
    assert run.init["project"] == "p1" and run.init["name"] == "r1" and run.init["mode"] == "offline"
    assert run.init["dir"] == str((tmp_path / "wandb").resolve())
    assert run.init["config"]["tracking.wandb"] is True
    assert [step for step, _ in run.logged] == list(range(EPOCHS))
    assert run.logged[1][1]["valid/full/ndcg_at_10"] == pytest.approx(0.11) and "epoch" not in run.logged[1][1]
    assert run.logged[-1][1]["learning_curves"] == ("image", str(run_dir / "learning_curves.png"))
    assert all("learning_curves" not in row for _, row in run.logged[:-1])
    assert run.summary["final/valid/full/ndcg_at_10"] == pytest.approx(0.12)
    assert run.summary["final/epochs_total"] == EPOCHS and run.finished == [0]


def test_a_failed_wandb_log_is_a_warning_not_a_failed_run(tmp_path, offline, caplog):
    from alsoview.distributed.tracking import log_finished_run

    config = _config(tmp_path / "wandb")
    empty = tmp_path / "r1"
    empty.mkdir()  # no history.csv
    with caplog.at_level("WARNING", logger="alsoview"):
        log_finished_run(empty, config)
    assert "wandb: run r1 not logged" in caplog.text and "history.csv" in caplog.text


# ---------------------------------------------------------------- alsoview tune


def test_tune_gets_an_offline_wandb_logger(tmp_path, offline):
    pytest.importorskip("wandb")
    import ray.cloudpickle
    from ray.air.integrations.wandb import WandbLoggerCallback

    from alsoview.distributed import tracking

    folder = tmp_path / "wandb"
    (callback,) = tracking.tune_callbacks(_config(folder, "tracking.wandb_project=search", "tune.name=t1"))
    assert isinstance(callback, WandbLoggerCallback) and type(callback) is tracking.WandbTrialLogger
    assert callback.project == "search" and callback.group == "t1"
    assert callback.kwargs == {"mode": "offline", "dir": str(folder.resolve())}
    assert callback.api_key is None and callback.api_key_path is None
    callback.setup()  # offline: Ray asks for no API key
    assert type(ray.cloudpickle.loads(ray.cloudpickle.dumps(callback))) is type(callback)
    assert tracking.WandbTrialActor is callback._logger_actor_cls
    assert tracking._renamed({"valid/full/ndcg@10": 0.3, "config": {"a@b": 1}}) == {
        "valid/full/ndcg_at_10": 0.3,
        "config": {"a@b": 1},
    }
