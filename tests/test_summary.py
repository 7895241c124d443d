"""What a command ends with: rounded figures, a verdict that says a loss plainly, the files it
wrote and the next command; runs found by name; --help with defaults; --version."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from alsoview.cli import main
from alsoview.errors import UserError
from alsoview.reporting.summary import (
    evaluate_lines,
    figure,
    prepare_lines,
    recommendation_lines,
    train_lines,
    verdict,
)
from alsoview.training.checkpoint import MODEL_FILE, find_run
from alsoview.version import __version__

KEY = "valid/full/ndcg@10"


def test_figures_are_rounded_and_missing_ones_say_so():
    assert figure(0.123456) == "0.1235"
    assert figure(None) == figure(math.nan) == figure("x") == "n/a"


def test_a_win_names_the_strongest_baseline_and_the_ratio():
    line = verdict(0.2, {"popularity": {KEY: 0.05}, "cooccurrence": {KEY: 0.1}}, KEY)
    assert line == f"{KEY}: model 0.2000, 2.00x the strongest baseline, cooccurrence (0.1000)"


def test_a_loss_is_said_plainly():
    line = verdict(0.09, {"cooccurrence": {KEY: 0.1}, "popularity": {KEY: 0.2}}, KEY)
    assert "does NOT beat the strongest baseline, popularity (0.2000" in line and "model at 0.45x" in line


def test_a_verdict_without_baselines_says_there_is_none():
    assert "no baseline to compare with" in verdict(0.1, {}, KEY)
    assert "no baseline to compare with" in verdict(0.1, {"popularity": {"other": 1.0}}, KEY)


def test_train_lines_give_the_best_epoch_the_verdict_and_the_next_command(tmp_path):
    metrics = {"epochs_total": 12, "best/epoch": 9, "early_stopped": True}
    best = {KEY: 0.0918, "valid/full/hr@10": 0.17, "valid/sampled100/hr@10": 0.28, "epoch": 9}
    lines = train_lines(tmp_path, "f05", metrics, best, {"cooccurrence": {KEY: 0.08}})
    text = "\n".join(lines)
    assert lines[0] == "trained f05: 12 epochs (stopped early), best epoch 9"
    assert "full NDCG@10 0.0918" in text and "1.15x the strongest baseline, cooccurrence" in text
    assert f"run: {tmp_path}" in text and "next: alsoview evaluate --run f05" in text


def test_evaluate_lines_leave_random_and_the_model_out_of_the_bar(tmp_path):
    results = {
        "model": {"test/full/ndcg@10": 0.1},
        "random": {"test/full/ndcg@10": 0.5},  # never the bar: chance
        "als": {"test/full/ndcg@10": 0.12},
    }
    lines = evaluate_lines(tmp_path, "f05", results, "test")
    assert [line.split()[0] for line in lines[1:4]] == ["random", "als", "model"]  # the table, best first
    assert "n/a" in lines[1]  # a figure the results lack
    assert "does NOT beat the strongest baseline, als (0.1200" in lines[-3]
    assert lines[-1] == "next: alsoview recommend --run f05 --user REVIEWER_ID"


def test_prepare_lines_count_what_was_dropped_and_why(tmp_path):
    manifest = {
        "rows": {"reviews": {"read": 10, "kept": 7, "dropped": 3}, "meta": {"read": 4, "kept": 4, "dropped": 0}},
        "counts": {"users": 2, "items": 3, "interactions": 7},
        "dropped": {"reviews": {"duplicate_interaction": 1, "bad_json": 2, "never": 0}, "meta": {}},
        "text_encoder": {"name": "hashing"},
        "inputs": {"reviews": [{"path": "/in/r.json.gz"}], "meta": []},
    }
    text = "\n".join(prepare_lines(tmp_path, manifest))
    assert f"next: alsoview train data.reviews=[/in/r.json.gz] data.prepared_dir={tmp_path}\n" in text
    assert "reviews: 10 lines read, 7 kept, 3 dropped (bad_json 2, duplicate_interaction 1)" in text
    assert "meta: 4 lines read, 4 kept, 0 dropped\n" in text and "never" not in text


def _frame(source: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "reviewer_id": ["u"] * 2,
            "rank": [1, 2],
            "asin": ["B001", "B002"],
            "title": ["A game", "Another"],
            "score": [2.5, 1.25],
            "source": [source] * 2,
        }
    )


def test_recommendations_say_what_their_score_is():
    lines = recommendation_lines("u", _frame("model"))
    assert lines[0] == "top 2 for u" and "score (model logit)" in lines[1]
    assert lines[2].split() == ["1", "B001", "A", "game", "2.500"]
    unknown = recommendation_lines("u", _frame("popularity (unknown user)"))
    assert "not a user of this run's data, so the most popular items" in unknown[0]
    assert "score (training reviews)" in unknown[1]


def _run_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / MODEL_FILE).write_bytes(b"")
    return path


def test_a_run_is_found_by_its_path_or_by_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("ALSOVIEW_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    named = _run_folder(tmp_path / "home" / "runs" / "f05")
    assert find_run("f05") == named
    assert find_run(str(named)) == named
    here = _run_folder(tmp_path / "f05")  # a folder of that name where the user is wins: it is what they typed
    assert find_run("f05") == here


def test_a_tuning_run_stands_for_its_final_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ALSOVIEW_HOME", str(tmp_path))
    final = _run_folder(tmp_path / "runs" / "search" / "best")
    assert find_run("search") == final


def test_a_missing_run_names_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("ALSOVIEW_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=f"neither nope nor {tmp_path / 'runs' / 'nope'} exists"):
        find_run("nope")
    with pytest.raises(UserError, match="no run directory /no/such/run"):
        find_run("/no/such/run")


def test_version_and_help_with_defaults(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"alsoview {__version__}"
    assert main(["recommend", "--help"]) == 0
    out = capsys.readouterr().out
    assert "items per user (default: 10)" in out and "(default: None)" not in out
