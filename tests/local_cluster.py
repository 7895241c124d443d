"""A Ray cluster of several nodes on this one machine, every process on 127.0.0.1, for fault tests.

Each node is one `ray_node.py` process and the Ray processes below it, with a few logical CPUs
(three nodes of 1 CPU fit on 2 cores). A test loses a node the way a cloud takes one back: every
process of it killed at once (SIGKILL), with no goodbye to the head. A node can also be started
in a mount namespace of its own with an empty file system over one path: a machine whose disk
does not have the driver's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from processes import command_line, descendants, running

ROOT = Path(__file__).resolve().parents[1]
TRAIN_WORKER = "ray::RayTrainWorker"


@dataclass
class Node:
    """One node: its launcher process (everything of the node runs below it) and what it printed."""

    proc: subprocess.Popen
    node_id: str
    head: bool

    def processes(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    def holds(self, title: str) -> list[int]:
        """PIDs of this node's processes whose command line starts with `title`."""
        return [pid for pid in descendants(self.proc.pid) if command_line(pid).startswith(title)]


class LocalCluster:
    """A head and worker nodes; `lose` kills a node, `add_node` brings one (or a replacement) up."""

    def __init__(self, temp_dir: Path, head_cpus: float = 1.0) -> None:
        self.temp_dir = temp_dir  # short: Ray's socket paths live in it
        self.env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
        self.nodes: list[Node] = []
        self.head = self._start(head_cpus, gcs=None)
        self.gcs, self.dashboard = self.head_info["gcs"], self.head_info["dashboard"]

    def _start(self, cpus: float, gcs: str | None, private_path: Path | None = None) -> Node:
        command = [sys.executable, str(ROOT / "tests" / "ray_node.py"), "--num-cpus", str(cpus)]
        command += ["--temp-dir", str(self.temp_dir), *(["--gcs", gcs] if gcs else [])]
        if private_path is not None:  # an empty tmpfs over `private_path`, seen by this node only
            mount = f'mount -t tmpfs alsoview-node-disk "{private_path}" && exec "$@"'
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", *command]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=self.env, cwd=ROOT)
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=30)
            raise AssertionError(f"a Ray node did not start (exit code {proc.returncode}): {command}")
        info = json.loads(line)
        if gcs is None:
            self.head_info = info
        node = Node(proc, info["node_id"], head=gcs is None)
        self.nodes.append(node)
        return node

    def add_node(self, cpus: float = 1.0, private_path: Path | None = None) -> Node:
        return self._start(cpus, self.gcs, private_path)

    def add_nodes(self, count: int, cpus: float = 1.0) -> list[Node]:
        # one after the other: nodes started at once on one machine collide on their socket names
        return [self.add_node(cpus) for _ in range(count)]

    def driver_env(self) -> dict[str, str]:
        """The environment of a command run against this cluster (`--address` names the head)."""
        # Ray's state API (Train's controller uses it) finds the dashboard by address
        return {**self.env, "RAY_API_SERVER_ADDRESS": f"http://{self.dashboard}"}

    def worker_node_holding(self, pids: set[int], title: str = TRAIN_WORKER) -> Node | None:
        """A node other than the head running one of `pids` as a `title` process (a Train worker)."""
        return next((node for node in self.nodes if not node.head and pids & set(node.holds(title))), None)

    def lose(self, node: Node) -> float:
        """Kill every process of `node` at once, as a pre-empted machine; returns when (time.time())."""
        pids = node.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        when = time.time()
        node.proc.wait(timeout=30)
        self.nodes.remove(node)
        return when

    def remove(self, node: Node) -> None:
        """Stop `node` cleanly (its launcher stops its Ray processes)."""
        pids = node.processes()
        node.proc.terminate()
        node.proc.wait(timeout=60)
        self.nodes.remove(node)
        self._kill_left(pids)

    def stop(self) -> None:
        pids = [pid for node in self.nodes for pid in node.processes()]
        for node in reversed(self.nodes):  # worker nodes first, the head last
            node.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=60)
        self.nodes.clear()
        self._kill_left(pids)

    @staticmethod
    def _kill_left(pids: list[int]) -> None:
        for pid in running(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while running(pids) and time.time() < deadline:
            time.sleep(0.2)
        assert not running(pids), "the test's Ray nodes left processes behind"
