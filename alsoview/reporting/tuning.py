"""The tuning job's report: what was searched, what won, how it does on the test split, what it cost.

`report.md` sits in the tuning run directory beside the plots it shows (`balance.png`,
`learning_curves.png`) and the table of every trial (`trials.csv`), so it reads the same in a
file browser, on GitHub, or after `ray rsync-down`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from alsoview.reporting.history import CURVES_FILE
from alsoview.reporting.plots import loss_title, plot_learning_curves

REPORT_FILE = "report.md"
BALANCE_FILE = "balance.png"
TRIALS_FILE = "trials.csv"
HEADLINE = "test/full/ndcg@10"  # the verdict's metric: full ranking first
# trials.csv's metric columns after the tuning metric, when Tune reported them
TRIAL_COLUMNS = (
    "valid/full/ndcg@10",
    "valid/full/hr@10",
    "valid/sampled100/hr@10",
    "valid/auc",
    "valid/hard_auc",
    "train/hard_negative_share",
    "train/loss",
    "training_iteration",
    "best/epoch",
)


def write_trials_csv(frame: pd.DataFrame, status: dict[Any, str], metric: str, path: Path) -> pd.DataFrame:
    """trials.csv: every trial's parameters and final metrics, best first.

    `frame`: Tune's results table (`ResultGrid.get_dataframe()`: `trial_id`, `config/<key>`, the
    last metrics); `status`: trial id -> its status (a trial missing there failed).
    """
    params = [c for c in frame.columns if c.startswith("config/")]
    keep = ["trial_id", "status", *params, metric, *[c for c in TRIAL_COLUMNS if c != metric]]
    frame = frame.assign(status=frame["trial_id"].map(status).fillna("failed"))
    trials = frame[[c for c in keep if c in frame.columns]].rename(columns=lambda c: c.removeprefix("config/"))
    trials = trials.sort_values(metric, ascending=False, na_position="last")
    trials.to_csv(path, index=False)
    return trials


def write_tuning_report(
    run_dir: Path,
    best: dict[str, Any],
    best_dir: Path,
    evaluation: dict[str, dict[str, float]],
    stage_seconds: dict[str, float],
    final_note: str = "",
) -> Path:
    """report.md and learning_curves.png in `run_dir`, from the search and the final run in
    `best_dir`; `final_note` says how the final model came from the best trial."""
    history = pd.read_csv(best_dir / "history.csv")
    plot_learning_curves(history, best["metric"], run_dir / CURVES_FILE, _loss_title(best_dir))
    evaluation_md = (best_dir / "evaluation.md").read_text()
    sections = [
        "# Tuning report",
        "",
        _search_section(best),
        *([f"## The final model\n\n{final_note[0].upper() + final_note[1:]}.\n"] if final_note else []),
        _test_section(evaluation, evaluation_md),
        _curves_section(history, best["metric"]),
        _timing_section(stage_seconds),
        f"The final model is in `{best_dir}`: `alsoview recommend --run {best_dir} --user ID`.",
        "",
    ]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(sections))
    return path


def _loss_title(best_dir: Path) -> str:
    """The loss the final run trained with (the search may choose it), from its config.yaml."""
    from alsoview.config import load_config

    saved = best_dir / "config.yaml"
    if not saved.is_file():
        return "training loss"  # a run folder without its config: which loss is unknown
    train = load_config(saved).train
    return loss_title(train.loss, train.hard_negative_weight)


def _search_section(best: dict[str, Any]) -> str:
    lines = [
        "## Best settings",
        "",
        f"{best['trials']} trials ({best['trials_completed']} completed, {best['trials_stopped_early']} stopped "
        f"early by ASHA, {best['trials_failed']} failed); best validation {best['metric']} "
        f"= {best['value']:.4f} (trial {best.get('trial_id', '?')}).",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| `{key}` | {_value(value)} |" for key, value in best["params"].items()]
    lines += ["", f"![balance]({BALANCE_FILE})", "", f"Every trial: `{TRIALS_FILE}`.", ""]
    return "\n".join(lines)


def _test_section(evaluation: dict[str, dict[str, float]], table_md: str) -> str:
    lines = ["## Test split: the final model against the baselines", ""]
    verdict = headline_verdict(evaluation)
    if verdict:
        lines += [verdict, ""]
    lines += [table_md.strip(), ""]
    return "\n".join(lines)


def headline_verdict(evaluation: dict[str, dict[str, float]]) -> str:
    """One sentence: the model's HEADLINE against the strongest other scorer (a loss is said plainly)."""
    model = evaluation.get("model", {}).get(HEADLINE, math.nan)
    others = {
        name: metrics.get(HEADLINE, math.nan)
        for name, metrics in evaluation.items()
        if name != "model" and math.isfinite(metrics.get(HEADLINE, math.nan))
    }
    if not math.isfinite(model) or not others:
        return ""
    strongest = max(others, key=others.get)
    relation = "beats" if model > others[strongest] else "does not beat"
    return (
        f"**{HEADLINE}: model {model:.4f}; it {relation} the strongest baseline, "
        f"{strongest} ({others[strongest]:.4f}).**"
    )


def _curves_section(history: pd.DataFrame, metric: str) -> str:
    last = history.iloc[-1]
    best_epoch = int(last.get("best/epoch", history[metric].idxmax()))
    return "\n".join(
        [
            "## Learning curves of the final run",
            "",
            f"{len(history)} epochs; best validation {metric} at epoch {best_epoch} "
            f"(`model.pt` holds that epoch's weights).",
            "",
            f"![learning curves]({CURVES_FILE})",
            "",
        ]
    )


def _timing_section(stage_seconds: dict[str, float]) -> str:
    lines = ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in stage_seconds.items()]
    lines += [f"| total | {sum(stage_seconds.values()):.1f} |", ""]
    return "\n".join(lines)


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
