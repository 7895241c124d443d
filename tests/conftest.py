"""Shared fixtures: one local Ray instance per test session, and the real-data folder."""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALWORLD = Path(os.environ.get("ALSOVIEW_REALWORLD_DIR", ROOT.parent / "shared" / "data" / "realworld"))


# Fixtures that start Ray or need a trained model: a test using any of them is in the slow tier.
RAY_FIXTURES = {"ray_session", "ray_head", "smoke_config", "trained_run", "watched_readme_train"}


def pytest_configure(config):
    config.addinivalue_line("markers", "ray_cluster: starts its own Ray head with `ray start`; runs first")
    config.addinivalue_line("markers", "ray: starts or uses Ray; `pytest -m 'not ray'` is the fast tier")
    # Relative output paths resolve under ALSOVIEW_HOME: the suite writes into a folder of its
    # own (subprocesses inherit it), never into the user's ~/alsoview.
    config._alsoview_home = tempfile.mkdtemp(prefix="alsoview-tests-home-")
    os.environ["ALSOVIEW_HOME"] = config._alsoview_home


def pytest_unconfigure(config):
    home = getattr(config, "_alsoview_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(session, config, items):
    """Tests that start a Ray head run before the suite's shared in-process Ray instance exists;
    tests that use Ray (through a fixture, or marked) form the slow tier."""
    for item in items:
        if RAY_FIXTURES & set(item.fixturenames) or item.get_closest_marker("ray_cluster"):
            item.add_marker(pytest.mark.ray)
    items.sort(key=lambda item: 0 if item.get_closest_marker("ray_cluster") or "ray_head" in item.fixturenames else 1)


@pytest.fixture(scope="session")
def ray_session():
    """A private local Ray bound to loopback, with the dashboard (Tune with ASHA needs its state API);
    never a Ray instance someone else started on this machine."""
    import ray

    from alsoview.distributed.runtime import init_ray

    init_ray(num_cpus=2, private=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def realworld() -> Path:
    """The real 2018-format Amazon files beside the checkout; required in CI, optional elsewhere."""
    if not REALWORLD.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data folder missing in CI: {REALWORLD}")
        pytest.skip(f"real data not found at {REALWORLD} (set ALSOVIEW_REALWORLD_DIR)")
    return REALWORLD


@pytest.fixture(scope="session")
def smoke_config(ray_session):
    """configs/smoke.yaml as the README's commands use it (outputs under the suite's storage root),
    its dataset generated and prepared once."""
    from alsoview.config import load_config, with_absolute_paths
    from alsoview.distributed.prepare import ensure_prepared

    return ensure_prepared(with_absolute_paths(load_config(ROOT / "configs" / "smoke.yaml")))


# The README's train and evaluate commands; the suite runs each once (training for 12 epochs) and
# tests the model and the evaluation they make.
README_TRAIN = "alsoview train --config configs/smoke.yaml train.run_name=f05 sampling.also_view_fraction=0.5"
README_TRAIN_EPOCHS = ["train.epochs=12"]
README_EVALUATE = "alsoview evaluate --run f05"


README_PRINTED: dict[str, str] = {}  # README command -> what it printed on stdout, last run


class _Tee(io.TextIOBase):
    """Writes to the stream it replaces and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def run_readme_command(command: str, extra: list[str], cwd: Path = ROOT) -> int:
    """A README command through the CLI's entry point in this process, from `cwd` (the checkout:
    the commands name configs/ relative to it), with `~/alsoview` (the default storage root)
    read as the suite's storage root; its exit code. What it printed is in README_PRINTED."""
    import contextlib
    import shlex

    from alsoview.cli import main

    words = [w.replace("~/alsoview", os.environ["ALSOVIEW_HOME"]) for w in shlex.split(command)]
    before = os.getcwd()
    os.chdir(cwd)
    tee = _Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(tee):
            return main([*words[1:], *extra])
    finally:
        README_PRINTED[command] = tee.copy.getvalue()
        os.chdir(before)


@pytest.fixture(scope="session")
def watched_readme_train(smoke_config):
    """The README's train command as written (2 workers, the smoke dataset) with 12 epochs, run
    through the CLI's entry point on this suite's 2-CPU Ray instance, with every listener its
    processes open watched from start to end: (its config, its result, the ListenerWatch)."""
    import json

    from processes import ListenerWatch

    from alsoview.config import load_config
    from alsoview.distributed.train import TrainResult

    with ListenerWatch() as listeners:
        assert run_readme_command(README_TRAIN, README_TRAIN_EPOCHS) == 0
    run_dir = Path(smoke_config.train.runs_dir) / "f05"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return load_config(run_dir / "config.yaml"), TrainResult(run_dir, metrics), listeners


@pytest.fixture(scope="session")
def trained_run(watched_readme_train):
    """The README's train run: (its config, its result)."""
    config, result, _ = watched_readme_train
    return config, result


@pytest.fixture(scope="session")
def evaluated_run(trained_run):
    """The README's evaluate command on that model: (its run, every scorer's test metrics)."""
    import json

    _, run = trained_run
    assert run_readme_command(README_EVALUATE, []) == 0
    return run, json.loads((run.run_dir / "evaluation.json").read_text())
