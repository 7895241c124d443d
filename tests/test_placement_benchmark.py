"""benchmarks/placement.py's sampler: which processes ran under which root, and their CPU time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import placement  # noqa: E402  (benchmarks/ is not a package: its scripts import _common by path)

BURN = "\n".join(
    ["import time", "end = time.process_time() + 0.6", "while time.process_time() < end: pass", "print(flush=True)"]
    + ["time.sleep(30)"]
)


def test_the_sampler_counts_each_roles_processes_and_cpu_seconds_under_its_place() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN!r}])"],
        stdout=subprocess.PIPE,
    )
    try:
        sampler = placement.Placement({"node 1": parent.pid, "driver": parent.pid})
        sampler.sample(first=True)
        parent.stdout.readline()  # the child has burnt its CPU time
        sampler.sample()
        burnt = sampler.seen[("node 1", f"{Path(sys.executable).name} -c")]["cpu_seconds"]
    finally:
        for pid in reversed(placement.process_tree(parent.pid)):  # the child first, then the parent
            os.kill(pid, signal.SIGKILL)
        parent.wait()
    sampler.sample()  # the processes have ended: what they used stays counted
    assert sampler.seen[("node 1", f"{Path(sys.executable).name} -c")]["cpu_seconds"] == burnt
    role = f"{Path(sys.executable).name} -c"
    assert sampler.seen[("node 1", role)]["processes"] == 2  # the parent and its child
    assert sampler.seen[("driver", "the command")]["processes"] == 1  # the driver's root is the command
    assert 0.4 < sampler.seen[("node 1", role)]["cpu_seconds"] < 5.0
    rows = placement.placed({"node 1": parent.pid}, sampler.seen)
    assert rows[0]["role"] == role and rows[0]["node 1"].endswith("(2)")
