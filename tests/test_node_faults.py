"""Losing a node: training and a search on a three-node cluster on this machine, with one node
killed mid-run; and storage that only some nodes see, refused up front.

The cluster (local_cluster.py): a head and two worker nodes of 1 logical CPU each, all on
127.0.0.1. Runs ask 1 CPU a training worker (`train.cpus_per_worker=1`), so no node holds two
workers: the two workers of a run are on two nodes, and the mixing tasks use the third CPU. The
run's storage is this machine's disk, which every node of it sees (a shared mount, as far as
Ray can tell). Set ALSOVIEW_FAULT_FIGURES to a file to record what was killed and how long
recovery took (benchmarks/README.md).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from local_cluster import FAST_DEATH, TRAIN_WORKER, LocalCluster

from alsoview.checkpoint import load_checkpoint
from alsoview.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray_cluster  # starts Ray processes of its own: before the suite's instance

# Epochs of a few seconds (32 negatives a positive on the smoke data), so a node can be lost in
# the middle of one; 1 CPU a worker spreads the two workers over two nodes.
RUN = ["--config", "configs/smoke.yaml", "train.cpus_per_worker=1", "sampling.negatives_per_positive=32"]
KILL_AFTER = 1.0  # seconds after the first checkpoint is on disk: the next epoch is under way


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    assert not ray.is_initialized(), "the node-fault tests must run before any test that starts Ray in-process"
    cluster = LocalCluster(Path(tmp_path_factory.mktemp("nodes", numbered=True)), env=FAST_DEATH)
    try:
        cluster.add_node()
        cluster.add_node()
        yield cluster
    finally:
        cluster.stop()


def _alsoview(cluster: LocalCluster, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alsoview.cli", *args[:1], "--address", cluster.gcs, *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cluster.driver_env(),
        cwd=ROOT,
    )


def _finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def _runs_dir() -> Path:
    return Path(os.environ["ALSOVIEW_HOME"]) / "runs"


def _checkpoints(folder: Path) -> list[tuple[float, int, Path]]:
    """(written at, epoch, path) of every checkpoint below `folder` that loads, oldest first."""
    found = []
    for path in folder.glob("**/checkpoint_*/checkpoint.pt"):
        try:
            epoch = load_checkpoint(path.parent).state.epoch
        except (UserError, OSError):  # being written right now
            continue
        found.append((path.stat().st_mtime, epoch, path))
    return sorted(found)


def _lose_a_worker_node_once_checkpointed(cluster: LocalCluster, folder: Path, proc: subprocess.Popen) -> dict:
    """When the first checkpoint is under `folder`, wait KILL_AFTER, kill a worker node holding a
    training worker, then add a replacement node; what was done and when."""
    deadline = time.time() + 300
    while not _checkpoints(folder):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
        time.sleep(0.1)
    time.sleep(KILL_AFTER)
    node = cluster.worker_node_holding(TRAIN_WORKER)
    assert node is not None, "no worker node holds a training worker"
    workers = len(node.holds(TRAIN_WORKER))
    killed_at = cluster.lose(node)
    cluster.add_node()
    return {"killed_at": killed_at, "workers_on_lost_node": workers, "replacement_up_after": time.time() - killed_at}


def _history_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "history.csv") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _record(name: str, figures: dict) -> None:
    target = os.environ.get("ALSOVIEW_FAULT_FIGURES")
    if target:
        path = Path(target)
        known = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**known, name: figures}, indent=2) + "\n")


def test_a_training_run_survives_the_loss_of_a_node_holding_a_worker_and_ends_as_if_never_interrupted(cluster):
    """Two runs of the same config: one left alone, one whose worker node is killed in epoch 1.
    Ray Train restarts the worker group (train.max_failures) on the nodes left and the
    replacement, from the last checkpoint every rank reported; the run ends with rc 0, every epoch
    once in history.csv, and the same final weights, to the last bit, as the run left alone (the
    samples of an epoch and the torch seed of each epoch depend on the seed and epoch only)."""
    epochs = ["train.epochs=3", "train.num_to_keep=10"]
    whole = _alsoview(cluster, "train", *RUN, *epochs, "train.run_name=node-whole")
    out = _finish(whole)
    assert whole.returncode == 0, out[-4000:]

    lost_run = _runs_dir() / "node-lost"
    proc = _alsoview(cluster, "train", *RUN, *epochs, "train.run_name=node-lost")
    reader = threading.Thread(target=lambda: setattr(proc, "output", _finish(proc)), daemon=True)
    reader.start()  # drains the pipe while the test watches the checkpoints
    fault = _lose_a_worker_node_once_checkpointed(cluster, lost_run, proc)
    reader.join(timeout=400)
    assert proc.returncode == 0, proc.output[-4000:]

    checkpoints = _checkpoints(lost_run)
    before = [epoch for written, epoch, _ in checkpoints if written < fault["killed_at"]]
    after = [(written, epoch) for written, epoch, _ in checkpoints if written >= fault["killed_at"]]
    assert before and max(before) < 2, (before, after)  # the kill fell inside an epoch, not after the last
    metrics = json.loads((lost_run / "metrics.json").read_text())
    resumed = metrics["resumed_from_epoch"]
    assert 0 <= resumed <= max(before), (resumed, before)
    assert _history_epochs(lost_run) == [0, 1, 2]
    assert sorted({epoch for _, epoch, _ in checkpoints}) == [0, 1, 2]  # no checkpoint went missing

    reference = torch.load(_runs_dir() / "node-whole" / "model.pt", weights_only=True)
    restarted = torch.load(lost_run / "model.pt", weights_only=True)
    assert reference["epoch"] == restarted["epoch"]
    assert reference["model"].keys() == restarted["model"].keys()
    for name, weights in reference["model"].items():
        assert torch.equal(weights, restarted["model"][name]), name
    last = {epoch: path for _, epoch, path in checkpoints}[2]
    last_reference = {epoch: path for _, epoch, path in _checkpoints(_runs_dir() / "node-whole")}[2]
    for name, weights in torch.load(last_reference, weights_only=True)["model"].items():
        assert torch.equal(weights, torch.load(last, weights_only=True)["model"][name]), name

    _record(
        "training",
        {
            **{k: v for k, v in fault.items() if k != "killed_at"},
            "killed_during_epoch": max(before) + 1,
            "resumed_from_epoch": resumed,
            "epochs_redone": sorted(set(before) - set(range(resumed + 1))) + [max(before) + 1],
            "seconds_to_next_finished_epoch": after[0][0] - fault["killed_at"],
            "history_epochs": _history_epochs(lost_run),
            "final_weights_equal_uninterrupted_run": True,
        },
    )
