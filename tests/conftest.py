"""Shared fixtures: one local Ray instance per test session, and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALWORLD = Path(os.environ.get("ALSOVIEW_REALWORLD_DIR", ROOT.parent / "shared" / "data" / "realworld"))


def pytest_configure(config):
    config.addinivalue_line("markers", "ray_cluster: starts its own Ray head with `ray start`; runs first")


def pytest_collection_modifyitems(session, config, items):
    """Tests that start a Ray head run before the suite's shared in-process Ray instance exists."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("ray_cluster") or "ray_head" in item.fixturenames else 1)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray bound to loopback, with the dashboard (Tune with ASHA needs its state API)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            _node_ip_address="127.0.0.1",
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
        )
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
