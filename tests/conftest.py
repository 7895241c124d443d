"""Shared fixtures: one local Ray instance per test session, and the real-data folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALWORLD = Path(os.environ.get("ALSOVIEW_REALWORLD_DIR", ROOT.parent / "shared" / "data" / "realworld"))


def pytest_configure(config):
    config.addinivalue_line("markers", "ray_cluster: starts its own Ray head with `ray start`; runs first")
    # Relative output paths resolve under ALSOVIEW_HOME: the suite writes into a folder of its
    # own (subprocesses inherit it), never into the user's ~/alsoview.
    config._alsoview_home = tempfile.mkdtemp(prefix="alsoview-tests-home-")
    os.environ["ALSOVIEW_HOME"] = config._alsoview_home


def pytest_unconfigure(config):
    home = getattr(config, "_alsoview_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(session, config, items):
    """Tests that start a Ray head run before the suite's shared in-process Ray instance exists."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("ray_cluster") or "ray_head" in item.fixturenames else 1)


@pytest.fixture(scope="session")
def ray_session():
    """A private local Ray bound to loopback, with the dashboard (Tune with ASHA needs its state API);
    never a Ray instance someone else started on this machine."""
    import ray

    from alsoview.runtime import init_ray

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
def smoke_config(ray_session, tmp_path_factory):
    """configs/smoke.yaml pointed at a temporary folder, its dataset generated and prepared once."""
    from alsoview.config import load_config
    from alsoview.data.prepare import ensure_prepared

    root = tmp_path_factory.mktemp("smoke")
    config = load_config(
        ROOT / "configs" / "smoke.yaml",
        [
            f"data.generated_dir={root / 'raw'}",
            f"data.prepared_dir={root / 'prepared'}",
            f"train.runs_dir={root / 'runs'}",
        ],
    )
    return ensure_prepared(config)


@pytest.fixture(scope="session")
def trained_run(smoke_config):
    """The smoke config trained once with 2 workers and the design's default model (30 epochs)."""
    import dataclasses

    from alsoview.train import train

    config = dataclasses.replace(
        smoke_config, train=dataclasses.replace(smoke_config.train, epochs=30, run_name="trained", patience=0)
    )
    return config, train(config)
