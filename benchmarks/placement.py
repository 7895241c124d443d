"""Where each stage runs on a cluster: the loopback multi-node test cluster (a head and two
worker nodes, every process on 127.0.0.1, tests/local_cluster.py), and for every stage a user
runs against it, which of its processes ran on which node and how much CPU each used.

    python benchmarks/placement.py                   # 20,000 users and 6,000 games, 1 epoch
    python benchmarks/placement.py --users 55000 --items 17000 --epochs 2

The stages are the CLI commands, each joining the cluster with `--address` (the driver is a
process of this machine outside the nodes, as `ray job submit` makes it one on the head):
`prepare` (hashing text encoder), `train` with `train.num_workers=2` and
`train.cpus_per_worker=1` (the nodes have 1 logical CPU each, so the two workers are on two
nodes), `evaluate --actors 2` on a seeded sample of test users. Every second a sampler reads
each node's processes (the node's launcher and everything below it) and the command's: each
process named by its title (`ray::<task or actor>`, raylet, ..., as `_common.process_role`
names them) and its CPU time from /proc. A stage's row per role and node: the most processes
of that role seen at once, and the CPU seconds they used during the stage (a process that ended
between two samples is missed: its last second at most). Writes
benchmarks/results/placement.json (or `--name`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DATA,
    RESULTS,
    ROOT,
    BackgroundSampler,
    command_line,
    print_table,
    process_role,
    process_tree,
    vg_prepare_command,
    write_json,
)

sys.path.insert(0, str(ROOT / "tests"))  # the test cluster: one node a process, all on loopback
from local_cluster import LocalCluster  # noqa: E402

SAMPLE_SECONDS = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HEAD_CPUS, WORKER_NODES, NODE_CPUS = 1, 2, 1  # as the node-fault tests: three nodes on two cores


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of one process so far; None when it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":  # ended, its exit status not yet collected: its times are no longer kept
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


class Placement(BackgroundSampler):
    """Samples, every `interval` seconds, the processes below each named root: per (place, role),
    the most processes seen at once and the CPU seconds used since the sampler started."""

    def __init__(self, roots: dict[str, int], interval: float = SAMPLE_SECONDS) -> None:
        self.roots, self.interval = roots, interval
        self.seen: dict[tuple[str, str], dict[str, float]] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()

    def sample(self, first: bool = False) -> None:
        """One reading; `first` only notes the CPU time each process has already used."""
        for place, root in self.roots.items():
            counts: dict[str, int] = {}
            for pid in process_tree(root):
                now = cpu_seconds(pid)
                if now is None:  # ended since the tree was listed
                    continue
                used, self._cpu[pid] = now - self._cpu.get(pid, 0.0), now
                if first:
                    continue
                role = "the command" if place == "driver" and pid == root else process_role(pid, root=-1)
                counts[role] = counts.get(role, 0) + 1
                entry = self.seen.setdefault((place, role), {"processes": 0, "cpu_seconds": 0.0})
                entry["cpu_seconds"] += used
            for role, count in counts.items():
                entry = self.seen[(place, role)]
                entry["processes"] = max(entry["processes"], count)

    def run(self) -> None:
        self.sample(first=True)
        while not self._stop.wait(self.interval):
            self.sample()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self.sample()  # what was used since the last reading


def placed(place_roots: dict[str, int], seen: dict[tuple[str, str], dict[str, float]]) -> list[dict[str, Any]]:
    """One row per role that used at least 0.5 CPU seconds somewhere: per place, its CPU
    seconds and processes (`cpu s (processes)`), most CPU first."""
    roles: dict[str, dict[str, Any]] = {}
    for (place, role), entry in seen.items():
        row = roles.setdefault(role, {"role": role, "cpu_seconds": 0.0})
        row["cpu_seconds"] += entry["cpu_seconds"]
        if entry["cpu_seconds"] >= 0.05:
            row[place] = f"{entry['cpu_seconds']:.1f} s ({int(entry['processes'])})"
    rows = [row for row in roles.values() if row["cpu_seconds"] >= 0.5]
    for row in rows:
        row["cpu_seconds"] = round(row["cpu_seconds"], 1)
    return sorted(rows, key=lambda row: -row["cpu_seconds"])


def stage(name: str, command: list[str], env: dict[str, str], nodes: dict[str, int]) -> dict[str, Any]:
    """Run one command against the cluster with the sampler on; fail loudly."""
    print(f"[placement] {name}: {' '.join(command[2:])}", flush=True)
    begin = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    roots = {**nodes, "driver": process.pid}
    with Placement(roots) as sampler:
        _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{name} failed (exit {process.returncode}):\n{stderr[-4000:]}")
    seconds = time.perf_counter() - begin
    rows = placed(roots, sampler.seen)
    print(f"[placement] {name}: {seconds:.1f} s", flush=True)
    return {"seconds": round(seconds, 1), "roles": rows}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "alsoview.cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=6_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-users", type=int, default=2000)
    parser.add_argument("--name", default="placement", help="results file name and data folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results file")
    parser.add_argument("--data", type=Path, default=BENCH_DATA, help="folder of the generated data and runs")
    args = parser.parse_args()
    folder = args.data / args.name
    shutil.rmtree(folder, ignore_errors=True)  # a run or dataset left from before would be reused, not measured
    raw, prepared, home = folder / "raw", folder / "prepared", folder / "home"
    generate = cli("generate", "--out", str(raw), "--users", str(args.users), "--items", str(args.items), "--seed", "0")
    subprocess.run(generate, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    prepare = vg_prepare_command(raw, prepared)
    data = [f"data.reviews=[{raw / 'reviews.json.gz'}]", f"data.meta=[{raw / 'meta.json.gz'}]"]
    data += [f"data.prepared_dir={prepared}", "text.encoder=hashing"]
    run = ["train.run_name=placement", f"train.epochs={args.epochs}", "train.num_workers=2", "train.cpus_per_worker=1"]
    evaluate = ["--run", str(home / "runs" / "placement"), "--actors", "2", "--max-users", str(args.eval_users)]
    cluster = LocalCluster(folder / "nodes", head_cpus=HEAD_CPUS)
    try:
        cluster.add_nodes(WORKER_NODES, cpus=NODE_CPUS)
        nodes = {("head" if node.head else f"node {i}"): node.proc.pid for i, node in enumerate(cluster.nodes)}
        env = {**cluster.driver_env(), "ALSOVIEW_HOME": str(home)}
        join = ["--address", cluster.gcs]
        commands = {
            "prepare": [*prepare[:4], *join, *prepare[4:]],  # python -m alsoview.cli prepare --address ...
            "train": cli("train", *join, *data, *run),
            "evaluate": cli("evaluate", *join, *evaluate),
        }
        stages = {name: stage(name, command, env, nodes) for name, command in commands.items()}
    finally:
        cluster.stop()
    places = [*nodes, "driver"]
    tables = [
        print_table(f"{name} ({found['seconds']:.0f} s)", found["roles"], ["role", "cpu_seconds", *places])
        for name, found in stages.items()
    ]
    title = "### Where each stage ran: CPU seconds of each role's processes by node (most of them at once)"
    payload = {"command": command_line("benchmarks/placement.py", args), "nodes": places, "stages": stages}
    write_json(args.name, {**payload, "table": "\n\n".join([title, *tables])}, args.results)


if __name__ == "__main__":
    main()
