"""No silent stall at any stage: each command run against a Ray instance whose CPUs someone else
holds ends with exit code 1 and one line naming the stage, what waited and who holds the CPUs.

The instance is a head of 2 logical CPUs on 127.0.0.1 of its own (local_cluster.py), where a
detached actor of another driver holds 1.6 CPUs, as in a cluster shared with other work: every
Ray Data task and actor of 1 CPU (prepare's parse and embedding, the evaluation's scoring pool)
and every training worker the plan sizes for 2 CPUs waits for ever. The last test holds the
remaining 0.4 too, so not even a Tune trial's function is placed. The diagnosis is checked for
what any correct one says (the stage, the setting, the cluster's CPUs, the holder), not for the
wording of what waited, which depends on how far a loaded machine got.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray_cluster  # starts Ray processes of its own: before the suite's instance

STALL_TIMEOUT = 8  # seconds; short, as every stage here waits for ever
SMOKE = ["--config", "configs/smoke.yaml", f"train.stall_timeout={STALL_TIMEOUT}"]
HANG_GUARD = 600  # seconds a command may take before the test calls it hung (never a speed check)

# Another driver's actor holding CPUs of the instance until the instance stops (a detached actor
# outlives the script that made it). Its class is defined in the script, so Ray ships it by value.
HOG = """
import sys
import ray
from alsoview.distributed.runtime import init_ray

init_ray(address=sys.argv[1])

class Hog:
    def ready(self):
        return True

hog = ray.remote(num_cpus=float(sys.argv[2]), lifetime="detached", name=sys.argv[3], namespace="hogs")(Hog)
ray.get(hog.remote().ready.remote(), timeout=300)
"""


@dataclass
class Held:
    cluster: LocalCluster
    folder: Path
    prepared: Path  # a dataset prepared before the CPUs were taken
    run: Path  # a run directory (an untrained model of the smoke config) to evaluate


def _alsoview(cluster: LocalCluster, command: str, *args: str) -> tuple[int, list[str]]:
    """A command against the instance; its exit code and its stderr lines."""
    done = subprocess.run(
        [sys.executable, "-m", "alsoview.cli", command, "--address", cluster.gcs, *args],
        capture_output=True,
        text=True,
        env=cluster.driver_env(),
        cwd=ROOT,
        timeout=HANG_GUARD,
    )
    return done.returncode, done.stderr.strip().splitlines()


def _hold(cluster: LocalCluster, cpus: float, name: str) -> None:
    subprocess.run(
        [sys.executable, "-c", HOG, cluster.gcs, str(cpus), name],
        env=cluster.driver_env(),
        cwd=ROOT,
        check=True,
        timeout=HANG_GUARD,
    )


def _untrained_run(prepared: Path, run: Path) -> Path:
    """A run directory as a finished run leaves it for evaluation (model.pt and its dataset),
    with the smoke config's initial weights: what it scores does not matter here."""
    import torch

    from alsoview.config import load_config, with_absolute_paths
    from alsoview.data.catalog import load_catalog
    from alsoview.model import MODEL_FORMAT, build_model
    from alsoview.training.checkpoint import MODEL_FILE, copy_dataset, plain

    config = with_absolute_paths(load_config([str(ROOT / "configs" / "smoke.yaml")], SMOKE[2:]))
    catalog = load_catalog(prepared)
    model = build_model(catalog, config.model, config.seed)
    run.mkdir(parents=True)
    saved = {"model": model.state_dict(), "vocabulary": catalog.vocabulary(), "config": plain(config.to_dict())}
    torch.save({**saved, "epoch": 0, "model_format": MODEL_FORMAT}, run / MODEL_FILE)
    copy_dataset(prepared, run)
    return run


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    cluster = LocalCluster(Path(tmp_path_factory.mktemp("held", numbered=True)), head_cpus=2)
    try:
        folder = tmp_path_factory.mktemp("stages")
        prepared = folder / "prepared"
        code, err = _alsoview(cluster, "prepare", *SMOKE, "--out", str(prepared))
        assert code == 0, "\n".join(err[-30:])
        run = _untrained_run(prepared, folder / "runs" / "untrained")
        _hold(cluster, 1.6, "hog")
        yield Held(cluster, folder, prepared, run)
    finally:
        cluster.stop()


def _stall_line(code: int, err: list[str], stage: str) -> str:
    """The command's own last line, checked for what every correct diagnosis of `stage` says."""
    # the CLI's own line; a Ray worker's line can still arrive after it
    line = next((text for text in reversed(err) if text.startswith("alsoview: ")), "")
    assert code == 1, "\n".join(err[-30:])
    assert line.startswith(f"alsoview: failed: {stage} stalled: "), line
    assert f"for {STALL_TIMEOUT}s (train.stall_timeout)" in line, line
    assert "the cluster has 2 CPUs" in line and "Hog (1.6 CPU)" in line, line
    assert "train.stall_timeout=0" in line, line
    return line


def test_prepare_whose_parse_tasks_find_no_cpu_stops_with_what_waited(held):
    code, err = _alsoview(held.cluster, "prepare", *SMOKE, "--out", str(held.folder / "prepared-starved"))
    line = _stall_line(code, err, "prepare")
    assert "parsed" in line or "embedded" in line, line
    assert not (held.folder / "prepared-starved" / "manifest.json").exists()


def test_train_on_data_not_yet_prepared_stops_in_its_prepare(held):
    never = held.folder / "never-prepared"
    code, err = _alsoview(held.cluster, "train", *SMOKE, f"data.prepared_dir={never}", "train.num_workers=1")
    _stall_line(code, err, "prepare")


def test_evaluate_whose_scoring_actors_find_no_cpu_stops_with_what_waited(held):
    code, err = _alsoview(held.cluster, "evaluate", "--run", str(held.run))
    line = _stall_line(code, err, "evaluate")
    assert "scored" in line, line


def test_batch_recommend_whose_actors_find_no_cpu_stops_with_what_waited(held):
    users = held.folder / "users.txt"
    users.write_text("A5ESXJD33Z0F8\nsomeone-else\n")
    out = held.folder / "recommendations.parquet"
    code, err = _alsoview(
        held.cluster, "recommend", "--run", str(held.run), "--users-file", str(users), "--out", str(out)
    )
    line = _stall_line(code, err, "recommend")
    assert "users scored" in line and not out.exists(), line


def test_a_search_whose_trial_training_is_never_placed_stops_at_the_first_trial(held):
    """The trial functions (0.01 CPU) are placed, their training workers are not: the first
    trial's training stalls, and the search stops there rather than trying every trial."""
    code, err = _alsoview(
        held.cluster,
        "tune",
        *SMOKE,
        f"data.prepared_dir={held.prepared}",
        "train.num_workers=1",
        "tune.name=stall-trial-training",
    )
    line = _stall_line(code, err, "stall-trial-training")
    assert "run the same command again to resume the search" in line, line


def test_a_search_whose_trials_are_never_placed_stops_with_what_waited(held):
    _hold(held.cluster, 0.4, "hog-rest")  # now not even a trial's 0.01 CPU is free
    code, err = _alsoview(
        held.cluster,
        "tune",
        *SMOKE,
        f"data.prepared_dir={held.prepared}",
        "train.num_workers=1",
        "tune.name=stall-trials",
    )
    line = _stall_line(code, err, "stall-trials")
    assert "Hog (0.4 CPU)" in line and "run the same command again to resume the search" in line, line
