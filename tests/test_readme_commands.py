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

import dataclasses
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import README_EVALUATE, README_PRINTED, README_TRAIN, README_TRAIN_EPOCHS, run_readme_command

README_RECOMMEND = "alsoview recommend --run f05 --user A5ESXJD33Z0F8 -k 5"  # a user of the smoke data
README_RECOMMEND_MANY = "alsoview recommend --run f05 --users-file users.txt"
README_SIMILAR = "alsoview similar --run f05 --asin B0LVWB28OK -k 5 --by cooccurrence"  # a game of the smoke data
README_EXPORT = "alsoview export --run f05 --out vectors"
README_VISITOR = "alsoview recommend --run f05 --items B0LVWB28OK,B0ZEVPFEES -k 5"  # games of the smoke data

ROOT = Path(__file__).resolve().parents[1]
COMMAND_STARTS = ("alsoview ", "python rayjobs/", "ray job submit ")
JOB_TEST = "tests/test_jobs.py::test_the_readme_job_runs_on_a_two_cpu_head_as_written"

# README command -> the overrides the suite appends (epoch, trial and grace-period epoch counts only)
RUNS: dict[str, list[str]] = {
    README_TRAIN: README_TRAIN_EPOCHS,  # conftest's trained_run: the model the other tests score
    README_EVALUATE: [],  # conftest's evaluated_run: test_evaluate checks its numbers
    README_RECOMMEND: [],
    README_RECOMMEND_MANY: [],
    README_SIMILAR: [],
    README_EXPORT: [],
    README_VISITOR: [],
    "alsoview compare --config configs/smoke.yaml --fractions 0,1 --seeds 1": ["train.epochs=1"],
    "alsoview tune --config configs/video_games.yaml tune.num_samples=32": [
        "tune.num_samples=2",
        "tune.max_epochs=1",
        "tune.grace_period=1",  # the epochs ASHA lets every trial run: at most tune.max_epochs
        "train.epochs=1",  # a trial's: the best trial's checkpoint is the final model
    ],
}
README_JOB = (
    "ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env-json "
    """'{"excludes": [".venv", "data", "runs", ".git"]}' -- python rayjobs/tune.py --config configs/smoke.yaml"""
)
README_SERVE = "alsoview serve --run f05 --port 8321"
ELSEWHERE = {  # README command -> the test that runs it
    README_JOB: JOB_TEST,
    README_SERVE: "tests/test_serve.py::test_the_readme_serve_command_answers_then_stops",
}


# Fenced blocks that hold code or settings rather than shell lines.
NOT_SHELL = ("python", "yaml")


def readme_commands(text: str) -> list[str]:
    """Commands of the kinds above in the README's shell and output blocks: continuation lines
    joined, comments and leading environment assignments (VAR=value) removed."""
    commands = []
    for language, block in re.findall(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M):
        if language.strip() in NOT_SHELL:
            continue
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
    assert readme_commands("```python\nalsoview = 1\n```\n```\nalsoview tune\n```\n") == ["alsoview tune"]


def test_recommend_for_a_user_and_for_a_file_of_users(trained_run, capsys, tmp_path):
    """The tour's recommend command (the README shows its output), then the batch form from a
    folder holding users.txt: both find the run by its name under the storage root."""
    out = _run(README_RECOMMEND, capsys)
    assert "top 5 for A5ESXJD33Z0F8\n" in out and "score (model logit)" in out
    assert [int(line.split()[0]) for line in out.splitlines()[2:7]] == [1, 2, 3, 4, 5]
    (tmp_path / "users.txt").write_text("A5ESXJD33Z0F8\nnobody-at-all\n")
    out = _run(README_RECOMMEND_MANY, capsys, cwd=tmp_path)
    assert "1 of them are not users of this run's data" in out
    _, run = trained_run
    frame = pd.read_parquet(run.run_dir / "recommendations.parquet")
    assert set(frame["reviewer_id"]) == {"A5ESXJD33Z0F8", "nobody-at-all"}


def test_recommend_for_a_visitor_described_by_their_games(trained_run, capsys):
    """The README's --items command: the README's run is the design (a user is an id), so
    co-occurrence scores the visitor and the header says so; never one of the visitor's games."""
    from alsoview.distributed.recommend import Recommender

    out = _run(README_VISITOR, capsys)
    lines = out.splitlines()
    assert lines[0].startswith("top 5 for a visitor with B0LVWB28OK, B0ZEVPFEES; scored by co-occurrence")
    shown = [line.split()[1] for line in lines[2:7]]
    assert not {"B0LVWB28OK", "B0ZEVPFEES"} & set(shown)
    _, run = trained_run
    frame, _ = Recommender.from_run(run.run_dir).recommend_items(["B0LVWB28OK", "B0ZEVPFEES"], 5)
    assert shown == list(frame["asin"])


def test_similar_games_and_the_vector_export(trained_run, capsys, tmp_path):
    """The README's similar and export commands, the export from a scratch folder."""
    out = _run(README_SIMILAR, capsys)
    assert out.startswith("most like B0LVWB28OK (") and "by users who had both" in out
    assert [int(line.split()[0]) for line in out.splitlines()[2:7]] == [1, 2, 3, 4, 5]
    out = _run(README_EXPORT, capsys, cwd=tmp_path)
    assert "user vectors (64 dims) written to vectors" in out
    assert {p.name for p in (tmp_path / "vectors").iterdir()} == {"items.parquet", "users.parquet", "vectors.json"}


def python_example(text: str) -> str:
    """The README's one Python block."""
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) == 1, f"expected one Python block in the README, found {len(blocks)}"
    return blocks[0]


def test_the_python_example_runs_as_written(ray_session, capsys):
    """The README's Python block, executed; the one change is one epoch instead of the smoke
    config's five (appended to its overrides, as RUNS appends epoch counts to commands)."""
    code = python_example((ROOT / "README.md").read_text())
    written = 'overrides=["train.run_name=from-python"]'
    assert written in code, "the README's Python example no longer names its overrides as this test expects"
    before = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(
            compile(
                code.replace(written, 'overrides=["train.run_name=from-python", "train.epochs=1"]'), "README", "exec"
            ),
            {},
        )
    finally:
        os.chdir(before)
    out = capsys.readouterr().out
    assert re.search(r"validation full NDCG@10: 0\.\d{4}", out)
    assert re.search(r"test: model 0\.\d{4}, co-occurrence 0\.\d{4}", out)
    assert "asin" in out and "title" in out


def _run(command: str, capsys, cwd: Path = ROOT) -> str:
    """The command as written plus its RUNS overrides (conftest's `run_readme_command`: it joins
    the suite's Ray instance, 2 CPUs, as on the machine this was tried on); its stdout."""
    code = run_readme_command(command, RUNS[command], cwd)
    out, err = capsys.readouterr()
    assert code == 0, f"{command!r} exited {code}:\n{err[-3000:]}"
    return out


def test_train_then_evaluate_its_model(evaluated_run):
    run, results = evaluated_run
    assert run.metrics["epochs_total"] == 12 and (run.run_dir / "model.pt").is_file()
    assert set(results) == {"model", "popularity", "random", "cooccurrence", "related", "als", "bpr"}
    assert "| model |" in (run.run_dir / "evaluation.md").read_text()
    trained, evaluated = README_PRINTED[README_TRAIN], README_PRINTED[README_EVALUATE]
    assert trained.startswith("trained f05: 12 epochs") and "next: alsoview evaluate --run f05" in trained
    # the verdict, against the strongest of popularity, co-occurrence and related on the same users
    assert re.search(r"^valid/full/ndcg@10: model 0\.\d{4}.* the strongest baseline, \w+ \(0\.\d{4}", trained, re.M)
    assert re.search(r"^test/full/ndcg@10: model 0\.\d{4}.* the strongest baseline, \w+ \(0\.\d{4}", evaluated, re.M)
    assert evaluated.rstrip().endswith("next: alsoview recommend --run f05 --user REVIEWER_ID")
    assert "{" not in trained + evaluated  # people's lines, not JSON (that is --json)


def test_compare_on_the_smoke_config(capsys, ray_session):
    out = _run("alsoview compare --config configs/smoke.yaml --fractions 0,1 --seeds 1", capsys)
    run_dir = Path(os.environ["ALSOVIEW_HOME"]) / "runs" / "compare"
    assert "Configuration for experiment" not in out and "driver_artifacts" not in out  # Tune's box and hint
    assert "| 0 | 1 |" in out and "| 1 | 1 |" in out
    assert "baseline: popularity" in out and "baseline: als" in out
    report = json.loads((run_dir / "comparison.json").read_text())
    assert len(report["runs"]) == 2
    assert set(report["baselines"]) == {"popularity", "random", "cooccurrence", "related", "als", "bpr"}
    assert (run_dir / "comparison.png").stat().st_size > 20_000
    assert f"tensorboard --logdir {run_dir}" in out
    assert list(run_dir.glob("*/events.out.tfevents.*")), "TensorBoard's files are not where the hint says"


def _exported_vectors_score_as_the_dot_head(recommender) -> None:
    """With a dot head (the recommended settings), user . item + bias of the vectors `export`
    writes is that head's logit: an inner-product index serves the model's first stage."""
    import torch

    from alsoview.model.vectors import item_vectors, user_vectors

    model = recommender.model.model
    items = item_vectors(model)
    assert items.scores_users
    users = np.arange(1, 6)
    logits = user_vectors(model, users) @ items.vectors.T + items.bias
    with torch.no_grad():
        head = model.heads["dot"].score_all(model.users(torch.as_tensor(users)), model.item_tower)
    np.testing.assert_allclose(logits, head.numpy(), rtol=1e-4, atol=1e-4)


def test_tune_on_the_video_games_config_then_resume_it(tmp_path, capsys, ray_session):
    """configs/video_games.yaml as written, from a folder holding files of the Video Games names:
    the search, the best trial as the final model, tested and reported; the same name again
    restores the finished search without new trials. (Training the best settings again, when
    train.epochs is more than a trial's, is test_tune's `final_plan` test plus `train` resuming.)"""
    from alsoview.config import flatten_search_space, load_config
    from alsoview.data.synthetic import generate
    from alsoview.distributed.recommend import Recommender
    from alsoview.distributed.tune import tune

    raw = tmp_path / "data" / "raw"
    summary = generate(tmp_path / "generated", users=800, items=200, seed=0)
    raw.mkdir(parents=True)
    summary.reviews_path.rename(raw / "Video_Games_5.json.gz")
    summary.meta_path.rename(raw / "meta_Video_Games.json.gz")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    out = _run("alsoview tune --config configs/video_games.yaml tune.num_samples=32", capsys, cwd=tmp_path)
    run_dir = Path(os.environ["ALSOVIEW_HOME"]) / "runs" / "tune"
    assert "trials: 2 (" in out and f"final model: {run_dir / 'best'}" in out
    assert f"tensorboard --logdir {run_dir}" in out

    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) <= {"completed", "stopped early"}
    assert (trials["training_iteration"] == 1).all()
    config = load_config(run_dir / "config.yaml")
    best = json.loads((run_dir / "best.json").read_text())
    space, _ = config.search_space()  # the space the search ran: no settings of parts that are off
    assert set(best["params"]) == set(space)
    assert set(space) < set(flatten_search_space(config.tune.search_space))  # the MLP's are left out
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        value = best["params"][key]
        assert value in args if kind == "choice" else args[0] <= value <= args[1], key
    assert (run_dir / "balance.png").stat().st_size > 10_000

    history = pd.read_csv(run_dir / "best" / "history.csv")
    assert len(history) == 1
    saved = load_config(run_dir / "best" / "config.yaml")
    for key, value in best["params"].items():  # the final run trained the best trial's settings
        assert saved.current(key) == (value if isinstance(value, (bool, str)) else pytest.approx(value)), key
    report = (run_dir / "report.md").read_text()
    assert "| model |" in report and "| cooccurrence |" in report and "| bpr |" in report
    assert "test/full/ndcg@10: model" in report
    assert "| final model (the best trial's checkpoint) |" in report
    assert "## The final model\n\nThe best trial ran 1 epochs" in report
    assert "| prepare (or reuse) the dataset |" in report
    assert (run_dir / "learning_curves.png").stat().st_size > 10_000
    # best/ is a run directory like any other: its own curves, events and dataset copy
    assert (run_dir / "best" / "learning_curves.png").is_file() and list((run_dir / "best" / "tensorboard").iterdir())
    assert (run_dir / "best" / "dataset" / "manifest.json").is_file()
    recommender = Recommender.from_run(run_dir / "best")
    top = recommender.recommend([recommender.catalog.user_reviewer_id[1]], 5)
    assert len(top) == 5 and (top["source"] == "model").all()
    _exported_vectors_score_as_the_dot_head(recommender)

    again = tune(dataclasses.replace(config, tune=dataclasses.replace(config.tune, final=False)))
    assert again.final is None
    assert sorted(again.trials["trial_id"]) == sorted(trials["trial_id"])
