"""benchmarks/scaling.py: its growth exponents, the epoch parts it reads from a run's history,
and one tiny run of the whole benchmark as documented (every stage a real CLI command)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scaling  # noqa: E402  (benchmarks/ is not a package: its scripts import _common by path)


def test_the_growth_exponent_is_the_log_log_slope() -> None:
    assert scaling.slope([1e5, 2e5, 4e5], [10.0, 20.0, 40.0]) == pytest.approx(1.0)
    assert scaling.slope([1e5, 2e5, 4e5], [10.0, 40.0, 160.0]) == pytest.approx(2.0)
    assert scaling.slope([1e5, 4e5], [3.0, 3.0]) == pytest.approx(0.0)
    assert scaling.slope([1e5], [3.0]) is None


def test_a_process_is_named_by_its_title() -> None:
    from _common import process_role

    child = subprocess.Popen(
        [sys.executable, "-c", "print(flush=True); import time; time.sleep(30)"], stdout=subprocess.PIPE
    )
    try:
        child.stdout.readline()  # it runs its program: its command line is the one given
        assert process_role(child.pid, root=child.pid) == "the command"
        assert process_role(child.pid, root=-1) == f"{Path(sys.executable).name} -c"
    finally:
        child.kill()
        child.wait()
    assert process_role(child.pid, root=-1) == "ended"


def test_the_recorded_command_is_the_one_typed() -> None:
    import argparse

    from _common import ROOT as BENCH_ROOT
    from _common import command_line

    args = argparse.Namespace(scales="1,2", settings=["design", "recommended"], swap=False, data=BENCH_ROOT / "data")
    assert command_line("benchmarks/scaling.py", args) == (
        "python benchmarks/scaling.py --scales 1,2 --settings design,recommended --no-swap --data data"
    )


def _result(interactions: int, seconds: float) -> dict:
    stage = {"seconds": seconds, "peak_gib": 1.0, "epoch": {"epoch_seconds": seconds / 2, "samples_per_second": 9.0}}
    return {"counts": {"interactions": interactions}, "stages": {"train design": stage}}


def test_each_quantity_gets_its_exponent_over_all_scales_and_the_two_largest() -> None:
    series = scaling.stage_series([_result(100, 1.0), _result(200, 2.0), _result(400, 8.0)])
    assert set(series) == {"train design: seconds", "train design: peak GiB", "train design: one epoch s"}
    rows = {row["quantity"]: row for row in scaling.exponent_rows(series)}
    seconds = rows["train design: seconds"]
    assert seconds["two largest"] == pytest.approx(2.0) and 1.0 < seconds["all scales"] < 2.0
    assert seconds["100"] == 1.0 and seconds["400"] == 8.0
    assert rows["train design: peak GiB"]["all scales"] == pytest.approx(0.0)


def test_epoch_parts_are_medians_of_the_run_history(tmp_path: Path) -> None:
    lines = ["epoch,train/epoch_seconds,train/seconds,train/data_wait_seconds,train/samples_per_second"]
    lines += ["0,9.0,7.0,1.0,100", "1,5.0,4.0,0.5,200", "2,6.0,4.5,0.2,150"]
    (tmp_path / "history.csv").write_text("\n".join(lines) + "\n")
    assert scaling.epoch_parts(tmp_path) == {
        "epoch_seconds": 6.0,
        "feed_and_steps_seconds": 4.5,
        "data_wait_seconds": 0.5,
        "validation_seconds": 1.5,
        "samples_per_second": 150.0,
    }


@pytest.mark.ray  # each command starts a private Ray instance, as a user's would
def test_the_benchmark_runs_every_stage_at_a_tiny_scale(tmp_path: Path) -> None:
    command = [
        sys.executable, "benchmarks/scaling.py", "--scales", "1", "--settings", "design", "--base-users", "200",
        "--base-items", "60", "--name", "tiny", "--results", str(tmp_path / "results"),
        "--data", str(tmp_path / "data"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = json.loads((tmp_path / "results" / "tiny.json").read_text())
    (scale,) = written["scales"]
    assert set(scale["stages"]) == {"generate", "prepare", "train design", "evaluate design"}
    assert all(stage["seconds"] > 0 and stage["peak_gib"] > 0 for stage in scale["stages"].values())
    train = scale["stages"]["train design"]
    roles = train["peak_by_process"]  # the peak's parts: the command, Ray's workers and programs
    assert "the command" in roles and any(role.startswith("ray::") for role in roles), roles
    assert sum(part["gib"] for part in roles.values()) <= train["peak_gib"] + 1e-3
    assert scale["counts"]["users"] == 200
    assert (tmp_path / "data" / "tiny" / "1x" / "home" / "runs" / "scaling-design" / "evaluation.json").is_file()
    assert (tmp_path / "results" / "tiny.png").is_file()
