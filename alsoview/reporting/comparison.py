"""`alsoview compare`'s report: every model of the fractions x seeds grid and the baselines,
scored on the same test cases, as comparison.json, comparison.md and comparison.png."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from alsoview.evaluation.protocols import REPORT_COLUMNS, skipped_note
from alsoview.reporting.plots import plot_comparison
from alsoview.training.checkpoint import plain


@dataclass
class CompareResult:
    run_dir: Path
    table: pd.DataFrame  # one row per fraction: mean and std over seeds of every metric
    baselines: dict[str, dict[str, float]]


def write_compare_report(
    run_dir: Path,
    trained: dict[str, dict[str, Any]],
    results: dict[str, dict[str, float]],
    baseline_names: list[str],
    split: str,
    skipped: dict[str, str] | None = None,
) -> CompareResult:
    """comparison.json (every model, baseline and peer), comparison.md (mean +- std per fraction), comparison.png."""
    per_run = pd.DataFrame([{**trained[k], **results[k]} for k in trained])
    metric_columns = [c for c in per_run.columns if c.startswith(f"{split}/")]
    grouped = per_run.groupby("fraction")[metric_columns]
    table = grouped.mean().add_suffix(" mean").join(grouped.std(ddof=0).add_suffix(" std")).reset_index()
    table.insert(1, "seeds", per_run.groupby("fraction").size().to_numpy())
    baselines = {name: results[name] for name in baseline_names}
    report = {
        "split": split,
        "runs": {k: {**trained[k], "metrics": results[k]} for k in trained},
        "baselines": baselines,
        "skipped_peers": skipped or {},
        "by_fraction": table.to_dict(orient="records"),
    }
    (run_dir / "comparison.json").write_text(json.dumps(plain(report), indent=2, default=str) + "\n")
    (run_dir / "comparison.md").write_text(_markdown(table, baselines, split) + skipped_note(skipped))
    plot_comparison(table, baselines, split, run_dir / "comparison.png")
    return CompareResult(run_dir, table, baselines)


def _markdown(table: pd.DataFrame, baselines: dict[str, dict[str, float]], split: str) -> str:
    columns = REPORT_COLUMNS
    head = "| also-view fraction | seeds | " + " | ".join(columns) + " |"
    lines = [
        f"# Also-view vs random negatives ({split} split)",
        "",
        "Model rows: mean ± std over seeds (same config and epoch budget); baselines and peers (ALS, BPR) "
        "are fitted once on the same train split.",
        "",
        head,
        "|" + "---|" * (len(columns) + 2),
    ]
    for _, row in table.iterrows():
        cells = [f"{row[f'{split}/{c} mean']:.4f} ± {row[f'{split}/{c} std']:.4f}" for c in columns]
        lines.append(f"| {row['fraction']:g} | {int(row['seeds'])} | " + " | ".join(cells) + " |")
    for name, metrics in baselines.items():
        cells = [f"{metrics[f'{split}/{c}']:.4f}" for c in columns]
        lines.append(f"| baseline: {name} | - | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
