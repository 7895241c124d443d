"""The reports and plots without Ray: a run's learning curves and TensorBoard files, the tuning
job's trials.csv, balance plot and report.md, and `compare`'s comparison files, from made-up
results."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pandas as pd
import pytest

from alsoview.evaluation.protocols import REPORT_COLUMNS
from alsoview.reporting.comparison import write_compare_report
from alsoview.reporting.history import summary_writer, write_history_views, write_tensorboard
from alsoview.reporting.plots import loss_title, plot_balance, plot_learning_curves
from alsoview.reporting.tuning import headline_verdict, write_trials_csv, write_tuning_report


def _open_figures() -> list[int]:
    import matplotlib.pyplot as plt

    return plt.get_fignums()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history(epochs: int = 4) -> list[dict]:
    """History rows as a train run writes them: loss, validation metrics, early-stopping columns."""
    ndcg = [0.05, 0.09, 0.08, 0.07][:epochs]
    return [
        {
            "epoch": e,
            "train/loss": 0.7 - 0.1 * e,
            "valid/full/ndcg@10": ndcg[e],
            "valid/sampled100/hr@10": 0.3 + 0.05 * e,
            "valid/auc": 0.6 + 0.05 * e,
            "valid/hard_pairs": 800.0,
            "valid/mean_auc": math.nan,  # a metric with no value is left out
            "best/epoch": min(e, 1),
            "early_stopped": False,
        }
        for e in range(epochs)
    ]


def test_the_learning_curves_name_the_loss_and_draw_every_validation_metric(tmp_path):
    path = tmp_path / "curves.png"
    titles = plot_learning_curves(pd.DataFrame(_history()), "valid/full/ndcg@10", path, loss_title("bce"))
    assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 10_000
    assert titles == ["training loss (binary cross-entropy)", "validation: ranking", "validation: AUC"]
    assert loss_title("softmax", 0.5) == "training loss (sampled softmax + 0.5 x BPR on also-view negatives)"
    assert loss_title("new_loss") == "training loss (new_loss)"  # a loss without a name here: its key
    assert _open_figures() == []


def _events(folder: Path) -> list:
    """Every event in a folder's event files (TFRecord framing: length, its CRC, data, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            events.append(Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return events


def test_tensorboard_files_hold_one_scalar_per_history_column_and_epoch(tmp_path):
    if summary_writer() is None:
        pytest.skip("no SummaryWriter: neither tensorboardX nor tensorboard is installed")
    pytest.importorskip("tensorboardX", reason="the event files are read back with tensorboardX's protobufs")
    folder = tmp_path / "tensorboard"
    assert write_tensorboard(pd.DataFrame(_history()), folder) == folder
    assert write_tensorboard(pd.DataFrame(_history()), folder) == folder  # written again: replaced
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    scalars = {(v.tag, e.step): v.simple_value for e in _events(folder) for v in e.summary.value}
    tags = {tag for tag, _ in scalars}
    assert tags == {
        "train/loss",
        "valid/full/ndcg_10",
        "valid/sampled100/hr_10",
        "valid/auc",
        "valid/hard_pairs",
        "best/epoch",
        "early_stopped",
    }
    assert len(scalars) == 4 * len(tags)
    assert scalars[("valid/full/ndcg_10", 1)] == pytest.approx(0.09)
    assert scalars[("train/loss", 3)] == pytest.approx(0.4)


def test_a_runs_history_views_and_the_line_that_says_where_they_are(tmp_path):
    line = write_history_views(tmp_path, _history(2), "valid/full/ndcg@10", loss_title("bpr"))
    assert (tmp_path / "learning_curves.png").read_bytes().startswith(PNG_SIGNATURE)
    assert line.startswith(f"learning curves: {tmp_path / 'learning_curves.png'}; ")
    if summary_writer() is not None:
        assert f"tensorboard --logdir {tmp_path / 'tensorboard'}" in line
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    else:
        assert "pip install tensorboard" in line
    assert write_history_views(tmp_path / "none", [], "valid/full/ndcg@10", "x").startswith("learning curves: none")


def test_the_tuning_report_from_a_search_and_a_final_run(tmp_path):
    frame = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "config/sampling.also_view_fraction": [0.2, 0.8, 0.5],
            "config/sampling.negatives_per_positive": [2, 4, 8],
            "valid/full/ndcg@10": [0.10, 0.30, math.nan],
            "train/loss": [0.5, 0.4, math.nan],
            "unlisted": [1, 2, 3],
        }
    )
    trials = write_trials_csv(frame, {"a": "stopped early", "b": "completed"}, "valid/full/ndcg@10", tmp_path / "t.csv")
    assert list(trials["trial_id"]) == ["b", "a", "c"]  # best first, no value last
    assert list(trials["status"]) == ["completed", "stopped early", "failed"]  # a trial without a status failed
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == [
        "trial_id",
        "status",
        "sampling.also_view_fraction",
        "sampling.negatives_per_positive",
        "valid/full/ndcg@10",
        "train/loss",
    ]
    plot_balance(trials, "valid/full/ndcg@10", tmp_path / "balance.png")

    best_dir = tmp_path / "best"
    best_dir.mkdir()
    history = {"epoch": [0, 1, 2], "train/loss": [0.6, 0.5, 0.45], "valid/full/ndcg@10": [0.1, 0.3, 0.2]}
    pd.DataFrame({**history, "best/epoch": [0, 1, 1]}).to_csv(best_dir / "history.csv", index=False)
    (best_dir / "evaluation.md").write_text("| scorer | test/full/ndcg@10 |\n|---|---|\n| model | 0.2 |\n")
    best = {
        "trial_id": "b",
        "metric": "valid/full/ndcg@10",
        "value": 0.3,
        "params": {"sampling.also_view_fraction": 0.8, "sampling.negatives_per_positive": 4},
        "trials": 3,
        "trials_completed": 1,
        "trials_stopped_early": 1,
        "trials_failed": 1,
    }
    evaluation = {"model": {"test/full/ndcg@10": 0.2}, "popularity": {"test/full/ndcg@10": 0.25}}
    report = write_tuning_report(tmp_path, best, best_dir, evaluation, {"search": 10.0, "final training": 2.5})
    text = report.read_text()
    assert report == tmp_path / "report.md" and (tmp_path / "learning_curves.png").stat().st_size > 0
    assert "3 trials (1 completed, 1 stopped early by ASHA, 1 failed)" in text
    assert "| `sampling.also_view_fraction` | 0.8 |" in text and "![balance](balance.png)" in text
    assert "it does not beat the strongest baseline, popularity (0.2500)" in text
    assert "best validation valid/full/ndcg@10 at epoch 1" in text and "| total | 12.5 |" in text
    assert headline_verdict({"model": {"test/full/ndcg@10": 0.3}}) == ""  # nothing to compare with
    assert _open_figures() == []


def test_the_comparison_report_averages_the_seeds_of_each_fraction(tmp_path):
    def metrics(value: float) -> dict[str, float]:
        return {f"test/{column}": value for column in REPORT_COLUMNS}

    trained = {
        f"model f={f:g} seed={s}": {"fraction": f, "seed": s, "best_epoch": 1, "epochs": 2}
        for f in (0.0, 1.0)
        for s in (0, 1)
    }
    results = {key: metrics(0.1 + 0.2 * row["fraction"] + 0.1 * row["seed"]) for key, row in trained.items()}
    results["popularity"] = metrics(0.05)
    result = write_compare_report(tmp_path, trained, results, ["popularity"], "test", {"als": "not installed"})
    row = result.table.set_index("fraction").loc[1.0]
    assert row["seeds"] == 2 and math.isclose(row["test/full/ndcg@10 mean"], 0.35)
    assert math.isclose(row["test/full/ndcg@10 std"], 0.05)
    markdown = (tmp_path / "comparison.md").read_text()
    assert "| 1 | 2 | 0.3500 ± 0.0500 |" in markdown and "| baseline: popularity | - | 0.0500 |" in markdown
    assert "Peers skipped: als: not installed." in markdown
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert set(saved["runs"]) == set(trained) and saved["skipped_peers"] == {"als": "not installed"}
    assert (tmp_path / "comparison.png").stat().st_size > 0 and _open_figures() == []
