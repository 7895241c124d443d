"""Losing a node: training and a search on a multi-node cluster on this machine, with a node
killed mid-run; and storage that only some nodes see, refused up front.

The cluster (local_cluster.py): a head and two worker nodes of 1 logical CPU each, all on
127.0.0.1. Runs ask 1 CPU a training worker (`train.cpus_per_worker=1`), so a node holds at
most one worker and a run's two workers are on two nodes. The run's storage is this
machine's disk, which every node of it sees (a shared mount, as far as Ray can tell). Set
ALSOVIEW_FAULT_FIGURES to a file to record what was killed and how long recovery took
(benchmarks/README.md).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from local_cluster import TRAIN_WORKER, LocalCluster
from processes import Watched

from alsoview.errors import UserError
from alsoview.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray_cluster  # starts Ray processes of its own: before the suite's instance

# Epochs of a few seconds (32 negatives a positive on the smoke data), so a node can be lost in
# the middle of one; 1 CPU a worker spreads the two workers over two nodes.
# Every checkpoint is kept (train.num_to_keep), so the tests see what was written before the kill.
RUN = [
    "--config",
    "configs/smoke.yaml",
    "train.cpus_per_worker=1",
    "sampling.negatives_per_positive=32",
    "train.num_to_keep=10",
]
KILL_AFTER = 1.0  # seconds after the first checkpoint is on disk: the next epoch is under way
# Three nodes of 1 CPU on this machine's 2 cores: two training workers and their mixing tasks.
HEAD_CPUS, WORKER_NODES = 1, 2
WORKER_RANK = re.compile(r"\(ip=[^,]+, pid=(\d+)\) world_rank=(\d+)")  # Ray Train's "Started ..." lines (-v)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    assert not ray.is_initialized(), "the node-fault tests must run before any test that starts Ray in-process"
    cluster = LocalCluster(Path(tmp_path_factory.mktemp("nodes", numbered=True)), head_cpus=HEAD_CPUS)
    try:
        cluster.add_nodes(WORKER_NODES)
        yield cluster
    finally:
        cluster.stop()


def _alsoview(cluster: LocalCluster, *args: str) -> Watched:
    return Watched(
        subprocess.Popen(
            # -v: Ray Train prints where each worker started only at INFO, which a plain run keeps off the console.
            [sys.executable, "-m", "alsoview.cli", *args[:1], "-v", "--address", cluster.gcs, *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cluster.driver_env(),
            cwd=ROOT,
        )
    )


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


def _lose_a_worker_node_once_checkpointed(cluster: LocalCluster, folder: Path, run: Watched) -> dict:
    """When the first checkpoint is under `folder`, wait KILL_AFTER, kill a worker node holding
    one of `run`'s training workers, then add a replacement node; what was done and when."""
    while not _checkpoints(folder):  # bounded by the run's silence, not by time: a busy machine is slow
        assert run.proc.poll() is None and run.silent_for() < 300, f"no checkpoint:\n{run.output()[-3000:]}"
        time.sleep(0.1)
    time.sleep(KILL_AFTER)
    ranks = {int(pid): int(rank) for pid, rank in WORKER_RANK.findall(run.output())}
    node = cluster.worker_node_holding(set(ranks))
    assert node is not None, f"no worker node holds one of the run's training workers {ranks}"
    lost = sorted(ranks[pid] for pid in set(ranks) & set(node.holds(TRAIN_WORKER)))
    killed_at = cluster.lose(node)
    cluster.add_node()
    return {"killed_at": killed_at, "ranks_on_lost_node": lost, "replacement_up_after": time.time() - killed_at}


def _recovery(checkpoints: list[tuple[float, int, Path]], killed_at: float) -> tuple[list[int], float]:
    """The epochs checkpointed before the kill, and seconds from the kill to the next new epoch's checkpoint."""
    before = [epoch for written, epoch, _ in checkpoints if written < killed_at]
    after = [written for written, epoch, _ in checkpoints if written >= killed_at and epoch > max(before, default=-1)]
    return before, (min(after) - killed_at if after else float("nan"))


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


@pytest.fixture(scope="module")
def search_that_lost_a_node(cluster) -> dict:
    """A two-trial search (32 negatives in every trial; ASHA stops no trial before its last
    epoch) whose first trial loses a worker node in its second epoch: its output, the fault, the
    lost trial's and the other trial's Ray Train runs."""
    search = [
        "tune.name=node-search",
        "tune.num_samples=2",
        "tune.max_epochs=2",
        "tune.grace_period=2",
        "train.epochs=2",
        "tune.search_space.sampling.negatives_per_positive=null",  # epochs long enough to be hit
    ]
    run_dir = _runs_dir() / "node-search"
    run = _alsoview(cluster, "tune", *RUN, *search)
    fault = _lose_a_worker_node_once_checkpointed(cluster, run_dir / "train_runs", run)
    output = run.finish(silence=500)
    assert run.proc.returncode == 0, output[-4000:]
    trial_runs = sorted((run_dir / "train_runs").iterdir())
    hit = [trial_run for trial_run in trial_runs if _recovery(_checkpoints(trial_run), fault["killed_at"])[0]]
    assert len(trial_runs) == 2 and len(hit) == 1, (trial_runs, hit)
    whole = next(trial_run for trial_run in trial_runs if trial_run not in hit)
    return {"run_dir": run_dir, "output": output, "fault": fault, "lost_trial": hit[0], "whole_trial": whole}


def test_a_search_survives_the_loss_of_a_node_holding_a_trials_worker(search_that_lost_a_node):
    """The trial that lost a worker node: its Ray Train run restarts from its checkpoint (or, when
    the trial's own function was on that node, Tune runs the trial again and its Train run
    resumes); the search ends with both trials completed, every epoch of each reported to Tune
    once and checkpointed, and best/ and report.md."""
    search = search_that_lost_a_node
    run_dir, fault = search["run_dir"], search["fault"]
    with open(run_dir / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}, trials
    # every epoch reached Tune once (ASHA counts reports), the lost trial's too
    assert [int(t["training_iteration"]) for t in trials] == [2, 2], trials
    for trial_run in (search["lost_trial"], search["whole_trial"]):
        assert {epoch for _, epoch, _ in _checkpoints(trial_run)} == {0, 1}, trial_run.name  # none missing
    assert "resumed from the checkpoint of epoch 0" in search["output"]
    assert (run_dir / "best" / "model.pt").is_file() and (run_dir / "report.md").is_file()
    before, recovery_seconds = _recovery(_checkpoints(search["lost_trial"]), fault["killed_at"])
    assert before == [0], before  # the kill fell inside the trial's last epoch
    _record(
        "search",
        {
            **{k: v for k, v in fault.items() if k != "killed_at"},
            "killed_during_epoch": 1,
            "trials": len(trials),
            "trial_statuses": sorted(t["status"] for t in trials),
            "trial_epochs_reported": [int(t["training_iteration"]) for t in trials],
            "seconds_to_next_finished_epoch": recovery_seconds,
        },
        search["output"],
    )


def test_a_training_run_survives_the_loss_of_a_node_holding_a_worker_and_ends_as_if_never_interrupted(
    cluster, search_that_lost_a_node
):
    """`alsoview train` with the settings of the search's trial that ran without a fault, whose
    worker node is killed in its last epoch. Ray Train restarts the worker group
    (train.max_failures) on the nodes left and the replacement, from the last checkpoint (written
    by a worker on another node); the run ends with rc 0, every epoch once in history.csv, and
    the weights of that trial to the last bit: an epoch's samples and its torch seed depend on
    the seed and the epoch only, so neither the restart nor Tune changes a number."""
    trial = _checkpoints(search_that_lost_a_node["whole_trial"])
    reference = load_checkpoint([path for _, epoch, path in trial if epoch == 1][-1].parent)
    same = [*RUN, *_trial_settings(reference.config), "train.epochs=2"]
    lost = _alsoview(cluster, "train", *same, "train.run_name=node-lost")
    lost_run = _runs_dir() / "node-lost"
    fault = _lose_a_worker_node_once_checkpointed(cluster, lost_run, lost)
    out = lost.finish(silence=400)
    assert lost.proc.returncode == 0, out[-4000:]

    checkpoints = _checkpoints(lost_run)
    before, recovery_seconds = _recovery(checkpoints, fault["killed_at"])
    assert before == [0], before  # the kill fell inside the last epoch, not after it
    metrics = json.loads((lost_run / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 0
    assert "resumed from the checkpoint of epoch 0" in out
    assert _history_epochs(lost_run) == [0, 1]
    assert {epoch for _, epoch, _ in checkpoints} == {0, 1}  # no checkpoint went missing

    restarted = load_checkpoint([path for _, epoch, path in checkpoints if epoch == 1][-1].parent)
    assert restarted.model.keys() == reference.model.keys()
    for name, weights in reference.model.items():
        assert torch.equal(weights, restarted.model[name]), name
    _record(
        "training",
        {
            **{k: v for k, v in fault.items() if k != "killed_at"},
            "killed_during_epoch": 1,
            "resumed_from_epoch": 0,
            "epochs_redone": [1],
            "seconds_to_next_finished_epoch": recovery_seconds,
            "history_epochs": _history_epochs(lost_run),
            "final_weights_equal_uninterrupted_run": True,
        },
        out,
    )


def _trial_settings(config) -> list[str]:
    """A trial's searched settings as overrides (`repr` of a float reads back as the same float)."""
    return [f"{key}={config.current(key)!r}" for key in sorted(config.search_space()[0])]


def test_runs_dir_that_a_node_does_not_see_is_refused_before_any_work(cluster, tmp_path):
    """A node whose file system has its own (empty) disk at the runs folder, as a machine without
    the shared mount: train is refused in one line naming that node, before any worker starts."""
    private = tmp_path / "node-local"
    private.mkdir()
    node = cluster.add_node(cpus=1, private_path=private)
    try:
        run = _alsoview(cluster, "train", *RUN, f"train.runs_dir={private / 'runs'}", "train.run_name=refused")
        out = run.finish(silence=300)
    finally:
        cluster.remove(node)
    assert run.proc.returncode == 2, out[-4000:]
    last = out.strip().splitlines()[-1]
    nodes = len(cluster.nodes) + 1  # with the one it had then
    refused = f"alsoview: error: train.runs_dir={private / 'runs'} is not shared storage: 1 of {nodes} Ray nodes"
    assert last.startswith(refused), last
    assert node.node_id[:8] in last and "docs/cluster.md" in last
    assert "Traceback" not in out and "TrainController" not in out  # refused before any training started
    assert not list(private.glob("runs/.alsoview-shared-*"))  # its probe file is gone
