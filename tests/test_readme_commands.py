"""The README's commands are the tested commands: every `alsoview ...`, `python rayjobs/...` and
`ray job submit ...` line in its fenced blocks runs here as written, on this suite's 2-CPU Ray
instance, to the end.

What the suite changes, and only that (each command's row in RUNS says which):
- epoch and trial counts, appended as overrides (`train.epochs=1`, `tune.num_samples=2`, ...);
- the storage root: ALSOVIEW_HOME is the suite's own folder, and `~/alsoview` in a command (the
  default storage root) is read as that folder;
- `configs/video_games.yaml` reads `data/raw/Video_Games_5.json.gz` and `meta_Video_Games.json.gz`
  from the current directory: the suite generates small files of exactly that format and name
  there (the real files cannot be downloaded here).

The `ray job submit` block needs a head started the README's way: tests/test_jobs.py runs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND_STARTS = ("alsoview ", "python rayjobs/", "ray job submit ")
JOB_TEST = "tests/test_jobs.py::test_the_readme_job_runs_on_a_two_cpu_head_as_written"

# README command -> the overrides the suite appends (epoch and trial counts only)
RUNS: dict[str, list[str]] = {
    "alsoview train --config configs/smoke.yaml": ["train.epochs=2"],
    "alsoview train train.run_name=f05 sampling.also_view_fraction=0.5 train.num_workers=2": ["train.epochs=1"],
    "alsoview evaluate --run ~/alsoview/runs/f05": [],
    "alsoview compare --config configs/smoke.yaml --fractions 0,1 --seeds 1": ["train.epochs=1"],
    "alsoview tune --config configs/video_games.yaml tune.num_samples=32": [
        "tune.num_samples=2",
        "tune.max_epochs=1",
        "tune.grace_period=1",  # the epochs ASHA lets every trial run: at most tune.max_epochs
        "train.epochs=1",
    ],
}
README_JOB = (
    "ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env-json "
    """'{"excludes": [".venv", "data", "runs", ".git"]}' -- python rayjobs/tune.py --config configs/smoke.yaml"""
)
ELSEWHERE = {README_JOB: JOB_TEST}  # README command -> the test that runs it


def readme_commands(text: str) -> list[str]:
    """Commands of the kinds above in the README's fenced blocks: continuation lines joined,
    comments and leading environment assignments (VAR=value) removed."""
    commands = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words = words[1:]
            command = shlex.join(words)
            if command.startswith(COMMAND_STARTS) or command.startswith(tuple(s.strip() for s in COMMAND_STARTS)):
                commands.append(command)
    return commands


def _normal(command: str) -> str:
    return shlex.join(shlex.split(command))


def test_every_readme_command_is_run_by_a_test():
    found = readme_commands((ROOT / "README.md").read_text())
    assert found, "no commands found in the README's fenced blocks"
    covered = {_normal(c) for c in [*RUNS, *ELSEWHERE]}
    assert set(found) == covered, (
        f"README commands without a test: {set(found) - covered}; stale rows: {covered - set(found)}"
    )


def test_the_parser_reads_continuations_comments_and_environment():
    text = "```bash\nRAY_AUTH_MODE=token ray job submit --address x \\\n  -- python rayjobs/tune.py  # job\nls\n```\n"
    assert readme_commands(text) == ["ray job submit --address x -- python rayjobs/tune.py"]


def _run(command: str, capsys) -> str:
    """The command as written plus its RUNS overrides, through the CLI's entry point in this
    process (it joins the suite's Ray instance: 2 CPUs, as on the machine this was tried on)."""
    from alsoview.cli import main

    home = os.environ["ALSOVIEW_HOME"]
    words = [w.replace("~/alsoview", home) for w in shlex.split(command)]
    assert words[0] == "alsoview"
    code = main([*words[1:], *RUNS[command]])
    out, err = capsys.readouterr()
    assert code == 0, f"{command!r} exited {code}:\n{err[-3000:]}"
    return out


@pytest.fixture(scope="module")
def in_root(ray_session):
    """The README's commands run from the checkout (they name configs/ relative to it)."""
    before = os.getcwd()
    os.chdir(ROOT)
    yield ROOT
    os.chdir(before)


def test_train_on_the_smoke_config(in_root, capsys):
    out = _run("alsoview train --config configs/smoke.yaml", capsys)
    metrics = json.loads(out[out.index("{") :])
    assert metrics["epochs_total"] == 2 and "valid/auc" in json.dumps(metrics)


@pytest.fixture(scope="module")
def f05(in_root):
    """The README's second command: the default dataset (generated and prepared on first use)."""
    from alsoview.cli import main

    command = "alsoview train train.run_name=f05 sampling.also_view_fraction=0.5 train.num_workers=2"
    assert main([*shlex.split(command)[1:], *RUNS[command]]) == 0
    return Path(os.environ["ALSOVIEW_HOME"]) / "runs" / "f05"


def test_train_and_evaluate_on_the_default_dataset(f05, capsys):
    assert (f05 / "model.pt").is_file()
    out = _run("alsoview evaluate --run ~/alsoview/runs/f05", capsys)
    assert "| model |" in out and "| cooccurrence |" in out
    assert (f05 / "evaluation.json").is_file()


def test_compare_on_the_smoke_config(in_root, capsys):
    out = _run("alsoview compare --config configs/smoke.yaml --fractions 0,1 --seeds 1", capsys)
    run_dir = Path(os.environ["ALSOVIEW_HOME"]) / "runs" / "compare"
    assert "| 0 | 1 |" in out and "| 1 | 1 |" in out
    assert (run_dir / "comparison.png").stat().st_size > 20_000
    assert f"tensorboard --logdir {run_dir}" in out
    assert list(run_dir.glob("*/events.out.tfevents.*")), "TensorBoard's files are not where the hint says"


def test_tune_on_the_video_games_config(tmp_path, capsys, ray_session):
    """configs/video_games.yaml as written, from a folder holding files of the Video Games names."""
    from alsoview.data.synthetic import generate

    raw = tmp_path / "data" / "raw"
    summary = generate(tmp_path / "generated", users=800, items=200, seed=0)
    raw.mkdir(parents=True)
    summary.reviews_path.rename(raw / "Video_Games_5.json.gz")
    summary.meta_path.rename(raw / "meta_Video_Games.json.gz")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    before = os.getcwd()
    os.chdir(tmp_path)
    try:
        out = _run("alsoview tune --config configs/video_games.yaml tune.num_samples=32", capsys)
    finally:
        os.chdir(before)
    run_dir = Path(os.environ["ALSOVIEW_HOME"]) / "runs" / "tune"
    assert "trials: 2 (" in out and f"final model: {run_dir / 'best'}" in out
    assert (run_dir / "report.md").is_file() and (run_dir / "best" / "model.pt").is_file()
    assert f"tensorboard --logdir {run_dir}" in out
