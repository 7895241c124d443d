"""How cost grows with the data: generated datasets at 1x, 2x, 4x, ... the Video Games scale
(users and items grow together, the planted structure kept), and for each the wall time and
peak memory of every stage a user runs, with a fitted growth exponent per stage.

    python benchmarks/scaling.py                          # 1x, 2x, 4x; the design and the recommended settings
    python benchmarks/scaling.py --scales 1,2,4,8,16 --epochs 3
    python benchmarks/scaling.py --settings design --scales 1,2
    python benchmarks/scaling.py --settings design,design-sparse --eval-users 2000 --name scaling-design

Each stage is the CLI command a user runs, in a process of its own with its own private Ray
(as `alsoview ...` on a laptop): `generate`, `prepare` (hashing text encoder), `train` for
`--epochs` epochs with each setting (the design: no config file; the recommended:
configs/video_games.yaml), `evaluate` of that run (the test split, every protocol and
reference) on a seeded sample of `--eval-users` test users: ranking every item for every user
grows with users x items, the square of the data when both grow, so the sample's cost per user
is what the table shows and the whole test set's cost is that times the users. Wall time is
the whole command, Ray's start included; peak memory is the largest
sum of PSS over the command's process tree (driver, Ray's processes, workers; the object store's
pages counted once), sampled every second, and broken down at that moment by process role
(`peak_by_process`: the command, each kind of Ray worker by its title, raylet, ...; of each,
its share of the object store's pages) (every 0.25 s, reading the PSS of a tree of multi-GiB
processes took a quarter of one of the two cores). Inside `prepare` the manifest's stage times, inside
`train` the run's history: an epoch's feed and steps (`train/seconds`, the Ray Data mixing runs
beside the steps and `data wait` is how long the steps waited for it) and the rest of the epoch,
its validation (`train/epoch_seconds` ends before the checkpoint is written).

The growth exponent of a stage is the slope of log(seconds) (or log(peak bytes)) against
log(interactions) by least squares over the scales run, and between the two largest scales
alone: 1.0 grows as the data does. Writes benchmarks/results/scaling.json (or `--name`) and a
log-log plot beside it. `--base-users` / `--base-items` shrink the 1x for a quick check (the
suite runs it that way).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DATA,
    RESULTS,
    ROOT,
    PeakMemory,
    command_line,
    print_table,
    vg_prepare_command,
    write_json,
)

SAMPLE_SECONDS = 1.0  # the memory sampler's period: a stage's peak lasts longer than that
VG_USERS, VG_ITEMS = 55_000, 17_000  # the Video Games 2018 5-core's size, as benchmarks/_common generates it
# The prepared data is embedded with the hashing encoder; each setting is told so.
SETTINGS = {
    "design": ["text.encoder=hashing"],
    # The design with lazy Adam on the embeddings: a step moves the batch's rows, not every row.
    "design-sparse": ["text.encoder=hashing", "model.sparse_embeddings=true"],
    "recommended": ["--config", "configs/video_games.yaml", "text.encoder=hashing"],
}


def measured(command: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """Run one command, its wall time and the peak PSS of its process tree; fail loudly."""
    print(f"[scaling] {what}: {' '.join(command[2:])}", flush=True)
    begin = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakMemory(process.pid, interval=SAMPLE_SECONDS) as memory:
        _, stderr = process.communicate()
    seconds = time.perf_counter() - begin
    if process.returncode != 0:
        raise SystemExit(f"{what} failed (exit {process.returncode}):\n{stderr[-4000:]}")
    print(f"[scaling] {what}: {seconds:.1f} s, peak {memory.peak_bytes / 2**30:.2f} GiB", flush=True)
    return {
        "seconds": round(seconds, 2),
        "peak_gib": round(memory.peak_bytes / 2**30, 3),
        "peak_by_process": peak_by_process(memory.at_peak),
    }


def peak_by_process(at_peak: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """The peak's parts by process role, in GiB: all of its PSS, and the object store's share of it."""
    return {
        role: {
            "processes": found["processes"],
            "gib": round(found["pss"] / 2**30, 3),
            "object_store_gib": round(found["shmem"] / 2**30, 3),
        }
        for role, found in at_peak.items()
        if found["pss"] >= 2**24  # under 16 MiB: Ray's small helpers, not worth a row
    }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "alsoview.cli", *args]


def epoch_parts(run_dir: Path) -> dict[str, float]:
    """Median over the run's epochs of its feed-and-steps time, the steps' wait for the feed, and
    the rest of the epoch (its validation: the epoch's time ends before its checkpoint), from history.csv."""
    with open(run_dir / "history.csv", newline="") as table:
        rows = list(csv.DictReader(table))

    def median_of(key: str) -> float:
        return statistics.median(float(row[key]) for row in rows)

    epoch, steps = median_of("train/epoch_seconds"), median_of("train/seconds")
    return {
        "epoch_seconds": round(epoch, 2),
        "feed_and_steps_seconds": round(steps, 2),
        "data_wait_seconds": round(median_of("train/data_wait_seconds"), 2),
        "validation_seconds": round(epoch - steps, 2),
        "samples_per_second": round(median_of("train/samples_per_second"), 1),
    }


def one_scale(scale: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage at one scale; the data is made again each time (the generator is a stage)."""
    folder = args.data / args.name / f"{scale}x"
    raw, prepared, home = folder / "raw", folder / "prepared", folder / "home"
    env = {**os.environ, "ALSOVIEW_HOME": str(home)}
    users, items = args.base_users * scale, args.base_items * scale
    stages: dict[str, Any] = {}
    command = cli("generate", "--out", str(raw), "--users", str(users), "--items", str(items), "--seed", "0")
    stages["generate"] = measured(command, env, f"{scale}x generate")
    stages["prepare"] = measured(vg_prepare_command(raw, prepared), env, f"{scale}x prepare")
    manifest = json.loads((prepared / "manifest.json").read_text())
    timing = manifest["timing_seconds"]
    stages["prepare"]["inside"] = {k: v for k, v in timing.items() if k != "text_items_per_second"}
    for setting in args.settings:
        run = f"scaling-{setting}"
        # The scale's raw files named too: a prepared dataset of other sources would be prepared again.
        overrides = [
            f"data.reviews=[{raw / 'reviews.json.gz'}]",
            f"data.meta=[{raw / 'meta.json.gz'}]",
            f"data.prepared_dir={prepared}",
            f"train.epochs={args.epochs}",
            f"train.run_name={run}",
        ]
        command = cli("train", *SETTINGS[setting], *overrides)
        stages[f"train {setting}"] = measured(command, env, f"{scale}x train {setting}")
        if json.loads((prepared / "manifest.json").read_text()) != manifest:
            raise SystemExit(f"{scale}x train {setting} prepared {prepared} again: it did not train on this scale")
        stages[f"train {setting}"]["epoch"] = epoch_parts(home / "runs" / run)
        command = cli("evaluate", "--run", str(home / "runs" / run))
        if args.eval_users:
            command += ["--max-users", str(args.eval_users)]
        stages[f"evaluate {setting}"] = measured(command, env, f"{scale}x evaluate {setting}")
        stages[f"evaluate {setting}"]["users"] = min(args.eval_users or users, users)
    return {"scale": scale, "users": users, "items": items, "counts": manifest["counts"], "stages": stages}


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two points."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    spread = sum((x - mx) ** 2 for x in lx)
    return round(sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / spread, 3) if spread else None


def stage_series(results: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per measured quantity (a stage's seconds or peak, an epoch's parts): its value at each scale."""
    series: dict[str, dict[str, list[float]]] = {}

    def add(name: str, x: float, y: float) -> None:
        entry = series.setdefault(name, {"interactions": [], "values": []})
        entry["interactions"].append(x)
        entry["values"].append(y)

    for result in results:
        x = float(result["counts"]["interactions"])
        for stage, found in result["stages"].items():
            add(f"{stage}: seconds", x, found["seconds"])
            add(f"{stage}: peak GiB", x, found["peak_gib"])
            for part, value in found.get("inside", {}).items():
                add(f"{stage}: {part.replace('_', ' ')} s", x, value)
            for part, value in found.get("epoch", {}).items():
                if part == "epoch_seconds":
                    add(f"{stage}: one epoch s", x, value)
                elif part.endswith("_seconds"):
                    add(f"{stage}: epoch's {part.removesuffix('_seconds').replace('_', ' ')} s", x, value)
    return series


def exponent_rows(series: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    for name, entry in series.items():
        xs, ys = entry["interactions"], entry["values"]
        row: dict[str, Any] = {"quantity": name, "all scales": slope(xs, ys), "two largest": slope(xs[-2:], ys[-2:])}
        for x, y in zip(xs, ys):
            row[f"{int(x):,}"] = y
        rows.append(row)
    return rows


def plot(series: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Seconds of each whole stage against interactions, log-log."""
    from alsoview.reporting.plots import saved_figure

    with saved_figure(path, 110, figsize=(7, 5)) as (_, axis):
        for name, entry in series.items():
            if name.endswith(": seconds"):
                axis.plot(entry["interactions"], entry["values"], marker="o", label=name.removesuffix(": seconds"))
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("interactions")
        axis.set_ylabel("seconds (whole command)")
        axis.legend(fontsize=8)
        axis.grid(True, which="both", alpha=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,2,4", help="multiples of the 1x (comma-separated, increasing)")
    parser.add_argument("--settings", default="design,recommended", help="of: " + ", ".join(SETTINGS))
    parser.add_argument("--epochs", type=int, default=1, help="train.epochs of each training run")
    parser.add_argument(
        "--eval-users",
        type=int,
        default=5000,
        help="evaluate a seeded sample of this many test users (0: all; full ranking costs users x items)",
    )
    parser.add_argument("--base-users", type=int, default=VG_USERS, help="users at 1x")
    parser.add_argument("--base-items", type=int, default=VG_ITEMS, help="reviewable items at 1x")
    parser.add_argument("--name", default="scaling", help="results file name and data folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results file")
    parser.add_argument("--data", type=Path, default=BENCH_DATA, help="folder of the generated data and runs")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    args.settings = [s for s in args.settings.split(",") if s]
    if scales != sorted(set(scales)) or scales[0] < 1:
        parser.error("--scales must be distinct positive integers in increasing order")
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; known: {list(SETTINGS)}")
    command = command_line("benchmarks/scaling.py", args)
    results: list[dict[str, Any]] = []
    for scale in scales:  # the results so far written after each scale: a long run that stops keeps them
        results.append(one_scale(scale, args))
        write_results(args, command, results)


def write_results(args: argparse.Namespace, command: str, results: list[dict[str, Any]]) -> None:
    series = stage_series(results)
    rows = exponent_rows(series)
    columns = ["quantity", "all scales", "two largest", *[k for k in rows[0] if k[0].isdigit()]]
    table = print_table("Growth exponents against interactions (1.0: as the data)", rows, columns)
    args.results.mkdir(parents=True, exist_ok=True)
    plot(series, args.results / f"{args.name}.png")
    payload = {"command": command, "scales": results, "exponents": rows, "table": table}
    write_json(args.name, payload, args.results)


if __name__ == "__main__":
    main()
