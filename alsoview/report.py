"""The tuning job's report: what was searched, what won, how it does on the test split, what it cost.

`report.md` sits in the tuning run directory beside the plots it shows (`balance.png`,
`learning_curves.png`), so it reads the same in a file browser, on GitHub, or after
`ray rsync-down`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

REPORT_FILE = "report.md"
CURVES_FILE = "learning_curves.png"
HEADLINE = "test/full/ndcg@10"  # the verdict's metric: full ranking first


def write_report(
    run_dir: Path,
    best: dict[str, Any],
    best_dir: Path,
    evaluation: dict[str, dict[str, float]],
    stage_seconds: dict[str, float],
) -> Path:
    """report.md and learning_curves.png in `run_dir`, from the search and the final run in `best_dir`."""
    history = pd.read_csv(best_dir / "history.csv")
    plot_learning_curves(history, best["metric"], run_dir / CURVES_FILE)
    evaluation_md = (best_dir / "evaluation.md").read_text()
    sections = [
        "# Tuning report",
        "",
        _search_section(best),
        _test_section(evaluation, evaluation_md),
        _curves_section(history, best["metric"]),
        _timing_section(stage_seconds),
        f"The final model is in `{best_dir}`: `alsoview recommend --run {best_dir} --user ID`.",
        "",
    ]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(sections))
    return path


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
    lines += ["", "![balance](balance.png)", "", "Every trial: `trials.csv`.", ""]
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


def plot_learning_curves(history: pd.DataFrame, metric: str, path: Path) -> None:
    """Training loss and the validation metric per epoch, the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_ax.plot(history["epoch"], history["train/loss"], marker=".")
    loss_ax.set_title("training loss (binary cross-entropy)")
    loss_ax.set_xlabel("epoch")
    metric_ax.plot(history["epoch"], history[metric], marker=".", label=metric)
    if "valid/sampled100/hr@10" in history and metric != "valid/sampled100/hr@10":
        metric_ax.plot(
            history["epoch"], history["valid/sampled100/hr@10"], marker=".", alpha=0.6, label="valid/sampled100/hr@10"
        )
    best_epoch = history.loc[history[metric].idxmax(), "epoch"]
    metric_ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
    metric_ax.set_title("validation")
    metric_ax.set_xlabel("epoch")
    metric_ax.legend(fontsize=8)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
