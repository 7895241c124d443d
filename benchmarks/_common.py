"""Shared pieces of the benchmark scripts: the Video-Games-scale dataset, the machine, tables, JSON.

Benchmarks are scripts, not tests: they print a table and write JSON under
``benchmarks/results/``. Nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/x.py` from a checkout

# Video Games 5-core (2018) has about 55k reviewers and 17k games with about 500k reviews; the
# generator (version 2) at this size writes 487,655 reviews and 86,710 meta lines in the raw format.
VG_USERS, VG_ITEMS, VG_SEED = 55_000, 17_000, 0
BENCH_DATA = ROOT / "data" / "bench"


def vg_raw_dir() -> Path:
    return BENCH_DATA / "vg_raw"


def vg_prepared_dir() -> Path:
    return BENCH_DATA / "vg_prepared"


def ensure_vg_raw() -> Path:
    """The generated Video-Games-scale raw files (made once per generator version, about 30 s)."""
    import shutil

    from alsoview.data.synthetic import GENERATION_RECORD, GENERATOR_VERSION, generate

    out = vg_raw_dir()
    record = out / GENERATION_RECORD
    if record.is_file() and json.loads(record.read_text()).get("generator_version", 1) != GENERATOR_VERSION:
        print(f"[bench] {out} was made by another generator version: generating it again", flush=True)
        shutil.rmtree(out)
        shutil.rmtree(vg_prepared_dir(), ignore_errors=True)
    if not record.is_file():
        print(
            f"[bench] generating a Video-Games-scale dataset in {out} ({VG_USERS} users, {VG_ITEMS} items)...",
            flush=True,
        )
        generate(out, users=VG_USERS, items=VG_ITEMS, seed=VG_SEED)
    return out


def vg_prepare_command(raw: Path, out: Path) -> list[str]:
    """`alsoview prepare` of the Video-Games-scale raw files with the hashing text encoder."""
    return [
        sys.executable,
        "-m",
        "alsoview.cli",
        "prepare",
        "--reviews",
        str(raw / "reviews.json.gz"),
        "--meta",
        str(raw / "meta.json.gz"),
        "--out",
        str(out),
        "text.encoder=hashing",
    ]


def ensure_vg_prepared() -> Path:
    """The prepared Video-Games-scale dataset with the hashing text encoder (made once, about 40 s)."""
    raw = ensure_vg_raw()  # first: a stale raw set removes its prepared set too
    out = vg_prepared_dir()
    if not (out / "manifest.json").is_file():
        print(f"[bench] preparing {raw} -> {out} (hashing text encoder)...", flush=True)
        subprocess.run(vg_prepare_command(raw, out), check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import ray
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table (so the README can take it as printed)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return "" if value is None else str(value)

    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    return text


def write_json(name: str, payload: dict[str, Any], folder: Path = RESULTS) -> Path:
    """`payload` as `folder`/<name>.json (benchmarks/results/, or an experiment's results folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str) + "\n")
    print(f"[bench] wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return path


def command_line(script: str, args: Any) -> str:
    """How the results file records the run: `python <script>` and each parsed argument as typed
    (`--flag` / `--no-flag` for booleans, lists comma-joined, paths in the repository relative;
    an option left unset is left out)."""

    def typed(name: str, value: Any) -> str:
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            return f"--{flag}" if value else f"--no-{flag}"
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, Path) and value.is_relative_to(ROOT):
            value = value.relative_to(ROOT)
        return f"--{flag} {value}"

    return " ".join([f"python {script}", *(typed(k, v) for k, v in vars(args).items() if v is not None)])


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


# ---------------------------------------------------------------- memory of a process tree


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    children, out, stack = _children_map(), [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def pss_parts(pid: int) -> dict[str, int]:
    """A process's proportional set size and its parts: shared pages (Ray's object store, in
    /dev/shm: ``Pss_Shmem``) are split between the processes that map them, not double counted."""
    wanted = {"Pss:": "pss", "Pss_Anon:": "anon", "Pss_Shmem:": "shmem"}
    parts = dict.fromkeys(wanted.values(), 0)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line else ""
            if key in wanted:
                parts[wanted[key]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return parts


def process_role(pid: int, root: int) -> str:
    """What a process is, from its title: the command itself, a Ray worker by the task or actor it
    runs (Ray titles them ``ray::<name>``), or Ray's own programs (raylet, gcs_server, ...)."""
    if pid == root:
        return "the command"
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "ended"
    if len(argv) == 1:  # a title set by the process (setproctitle): its words in one string
        argv = argv[0].split()
    if not argv:
        return "unnamed"
    if argv[0].startswith("ray::"):
        return argv[0].split("(")[0]
    if "-c" in argv:  # a program given inline (multiprocessing's helpers, ...): its text is no name
        return f"{Path(argv[0]).name} -c"
    programs = [Path(a).name for a in argv[:3] if not a.startswith("-")]
    scripts = [name for name in programs if name.endswith(".py")]
    return scripts[0] if scripts else programs[0] if programs else "unnamed"


class BackgroundSampler:
    """A `with` block during which `run()` samples in a daemon thread of its own, until `_stop`
    is set on leaving it."""

    _stop: threading.Event

    def run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class PeakMemory(BackgroundSampler):
    """Samples the summed PSS of a process and all its descendants (Ray's raylet, GCS and workers
    started by a local ``ray.init`` are descendants of the driver). Linux only (/proc).

    ``at_peak`` breaks the peak down by process role (``process_role``): for each, the processes
    counted, their PSS, its anonymous part (the process's own heap) and its shared-memory part
    (the object store's pages it maps), in bytes, at the sample where the sum was largest."""

    root: int
    interval: float = 0.25
    peak_bytes: int = 0
    samples: int = 0
    at_peak: dict[str, dict[str, int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            parts = {pid: pss_parts(pid) for pid in process_tree(self.root)}
            total = sum(p["pss"] for p in parts.values())
            if total > self.peak_bytes:
                self.peak_bytes, self.at_peak = total, self._by_role(parts)
            self.samples += 1
            self._stop.wait(self.interval)

    def _by_role(self, parts: dict[int, dict[str, int]]) -> dict[str, dict[str, int]]:
        roles: dict[str, dict[str, int]] = {}
        for pid, found in parts.items():
            role = roles.setdefault(process_role(pid, self.root), {"processes": 0, "pss": 0, "anon": 0, "shmem": 0})
            role["processes"] += 1
            for key, value in found.items():
                role[key] += value
        return dict(sorted(roles.items(), key=lambda kv: -kv[1]["pss"]))


def ray_local(num_cpus: int | None = None) -> None:
    """A private local Ray on loopback (the benchmarks never join a cluster, nor another run's Ray)."""
    from alsoview.distributed.runtime import init_ray

    print(init_ray(num_cpus=num_cpus or os.cpu_count(), private=True), flush=True)
