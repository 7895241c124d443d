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


def _record(name: str, figures: dict, output: str) -> None:
    """Add `figures` to ALSOVIEW_FAULT_FIGURES (a JSON file) and the run's output beside it."""
    target = os.environ.get("ALSOVIEW_FAULT_FIGURES")
    if target:
        path = Path(target)
        known = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**known, name: figures}, indent=2) + "\n")
        path.with_name(f"{path.stem}-{name}.log").write_text(output)


def test_a_training_run_survives_the_loss_of_a_node_holding_a_worker_and_ends_as_if_never_interrupted(cluster):
    """Two runs of the same config: one left alone, one whose worker node is killed in epoch 1 (the last).
    Ray Train restarts the worker group (train.max_failures) on the nodes left and the
    replacement, from the last checkpoint every rank reported; the run ends with rc 0, every epoch
    once in history.csv, and the same final weights, to the last bit, as the run left alone (the
    samples of an epoch and the torch seed of each epoch depend on the seed and epoch only)."""
    epochs = ["train.epochs=2", "train.num_to_keep=10"]
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
    assert before and max(before) < 1, (before, after)  # the kill fell inside the last epoch, not after it
    metrics = json.loads((lost_run / "metrics.json").read_text())
    resumed = metrics["resumed_from_epoch"]
    assert 0 <= resumed <= max(before), (resumed, before)
    assert _history_epochs(lost_run) == [0, 1]
    assert sorted({epoch for _, epoch, _ in checkpoints}) == [0, 1]  # no checkpoint went missing

    reference = torch.load(_runs_dir() / "node-whole" / "model.pt", weights_only=True)
    restarted = torch.load(lost_run / "model.pt", weights_only=True)
    assert reference["epoch"] == restarted["epoch"]
    assert reference["model"].keys() == restarted["model"].keys()
    for name, weights in reference["model"].items():
        assert torch.equal(weights, restarted["model"][name]), name
    last = {epoch: path for _, epoch, path in checkpoints}[1]
    last_reference = {epoch: path for _, epoch, path in _checkpoints(_runs_dir() / "node-whole")}[1]
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
        proc.output,
    )


def test_a_search_survives_the_loss_of_a_node_holding_a_trials_worker(cluster):
    """A two-trial search whose first trial loses a worker node in its second epoch: the trial's
    Ray Train run restarts from its checkpoint (or, when the trial's own function was on that node,
    Tune runs the trial again and its Train run resumes); the search ends with both trials
    finished, the best trial's model in best/ and report.md."""
    search = ["tune.name=node-search", "tune.num_samples=2", "tune.max_epochs=2", "train.epochs=2"]
    run_dir = _runs_dir() / "node-search"
    proc = _alsoview(cluster, "tune", *RUN, *search)
    reader = threading.Thread(target=lambda: setattr(proc, "output", _finish(proc, timeout=500)), daemon=True)
    reader.start()
    fault = _lose_a_worker_node_once_checkpointed(cluster, run_dir / "train_runs", proc)
    reader.join(timeout=500)
    assert proc.returncode == 0, proc.output[-4000:]

    with open(run_dir / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}, trials
    # every epoch of every trial reached Tune once (ASHA counts reports), the lost one included
    assert [int(t["training_iteration"]) for t in trials] == [2, 2], trials
    trial_runs = sorted((run_dir / "train_runs").iterdir())
    assert len(trial_runs) == 2
    for trial_run in trial_runs:
        assert {epoch for _, epoch, _ in _checkpoints(trial_run)} == {0, 1}, trial_run.name  # none missing
    assert (run_dir / "best" / "model.pt").is_file() and (run_dir / "report.md").is_file()
    after = [written for trial_run in trial_runs for written, _, _ in _checkpoints(trial_run)]
    _record(
        "search",
        {
            **{k: v for k, v in fault.items() if k != "killed_at"},
            "trials": len(trials),
            "trial_statuses": sorted(t["status"] for t in trials),
            "seconds_to_next_checkpoint": min(w for w in after if w >= fault["killed_at"]) - fault["killed_at"],
        },
        proc.output,
    )


def test_runs_dir_that_a_node_does_not_see_is_refused_before_any_work(cluster, tmp_path):
    """A node whose file system has its own (empty) disk at the runs folder, as a machine without
    the shared mount: train is refused in one line naming that node, before any worker starts."""
    private = tmp_path / "node-local"
    private.mkdir()
    node = cluster.add_node(cpus=1, private_path=private)
    try:
        proc = _alsoview(cluster, "train", *RUN, f"train.runs_dir={private / 'runs'}", "train.run_name=refused")
        out = _finish(proc, timeout=300)
    finally:
        cluster.remove(node)
    assert proc.returncode == 2, out[-4000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"alsoview: error: train.runs_dir={private / 'runs'} is not shared storage: 1 of 4"), last
    assert node.node_id[:8] in last and "docs/cluster.md" in last
    assert "Traceback" not in out and "TrainController" not in out  # refused before any training started
    assert not list(private.glob("runs/.alsoview-shared-*"))  # its probe file is gone
