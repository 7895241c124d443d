"""The figures: a run's learning curves, the tuning balance, the comparison of fractions.

matplotlib is imported when a figure is drawn (not when alsoview is), on the Agg backend: the
figures are files, drawn where there is no display (Ray workers, CI). `saved_figure` is the one
place a figure is set up, saved and closed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alsoview.evaluation.protocols import PROTOCOLS

FRACTION_KEY = "sampling.also_view_fraction"  # the balance the tuning plot puts on its x axis
PLOTTED = ("ndcg@10", "auc")  # the comparison's rows, one column per protocol


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def saved_figure(path: Path, dpi: int, *grid: int, **options: Any) -> Iterator[tuple[Any, Any]]:
    """A new figure and its axes (`plt.subplots(*grid, **options)`) to draw in; then laid out,
    saved to `path` at `dpi` and closed."""
    plt = _pyplot()
    fig, axes = plt.subplots(*grid, **options)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


# What each train.loss minimises, as a panel title names it (config.schema.Loss).
LOSS_NAMES = {
    "bce": "binary cross-entropy",
    "bpr": "BPR",
    "softmax": "sampled softmax",
    "full_softmax": "softmax over every item",
}
NOT_PLOTTED = ("valid/hard_pairs",)  # a count of pairs, not a metric


def loss_title(loss: str, hard_negative_weight: float = 0.0) -> str:
    """The loss panel's title: `training loss (binary cross-entropy)`, with the BPR term over
    also-view negatives named when train.hard_negative_weight adds it."""
    name = LOSS_NAMES.get(loss, loss)
    if hard_negative_weight > 0:
        name += f" + {hard_negative_weight:g} x BPR on also-view negatives"
    return f"training loss ({name})"


def validation_columns(history: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The history's validation metrics with a value, split by scale: the ranking metrics (a few
    hundredths for full NDCG@10) and the AUCs (0.5 is chance), each drawn in its own panel."""
    columns = [
        c
        for c in history.columns
        if c.startswith("valid/") and c not in NOT_PLOTTED and pd.to_numeric(history[c], errors="coerce").notna().any()
    ]
    aucs = [c for c in columns if c.endswith("auc")]
    return [c for c in columns if c not in aucs], aucs


def best_epoch(history: pd.DataFrame, metric: str) -> Any:
    """The epoch early stopping kept: the last row's `best/epoch`, else the metric's maximum."""
    if "best/epoch" in history and history["best/epoch"].notna().any():
        return int(history["best/epoch"].dropna().iloc[-1])
    return history.loc[history[metric].idxmax(), "epoch"]


def plot_learning_curves(history: pd.DataFrame, metric: str, path: Path, loss: str = "training loss") -> list[str]:
    """The training loss (`loss`: its panel's title, `loss_title`) and every validation metric per
    epoch, the best epoch by `metric` marked; one row of history per epoch. Returns the panels'
    titles, in order."""
    from matplotlib.ticker import MaxNLocator

    ranking, aucs = validation_columns(history)
    groups = [("validation: ranking", ranking), ("validation: AUC", aucs)]
    groups = [(title, columns) for title, columns in groups if columns]
    width = 4.6 * (1 + len(groups))
    with saved_figure(path, 100, 1, 1 + len(groups), figsize=(width, 3.8), squeeze=False) as (fig, axes):
        loss_ax, *metric_axes = axes[0]
        loss_ax.plot(history["epoch"], history["train/loss"], marker=".")
        loss_ax.set_title(loss, fontsize=10)
        best = best_epoch(history, metric) if metric in history and history[metric].notna().any() else None
        for ax, (title, columns) in zip(metric_axes, groups):
            for column in columns:
                style = {"linewidth": 2.2} if column == metric else {"alpha": 0.7}
                ax.plot(history["epoch"], history[column], marker=".", label=column.removeprefix("valid/"), **style)
            if best is not None:
                ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best}, by {metric})")
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=7)
        for ax in (loss_ax, *metric_axes):
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return [loss, *(title for title, _ in groups)]


def plot_balance(trials: pd.DataFrame, metric: str, path: Path) -> None:
    """The tuning metric against the also-view share of negatives, one point per trial."""
    with saved_figure(path, 110, figsize=(6.5, 4.2)) as (fig, ax):
        if FRACTION_KEY in trials and metric in trials:
            data = trials.dropna(subset=[metric])
            k_key = "sampling.negatives_per_positive"
            points = None
            # Trials ASHA stopped are drawn hollow: their last value comes from fewer epochs.
            for stopped, group in data.groupby(data["status"] == "stopped early"):
                colour = group[k_key] if k_key in group else "tab:blue"
                points = ax.scatter(
                    group[FRACTION_KEY],
                    group[metric],
                    c=colour,
                    cmap="viridis",
                    s=46,
                    marker="o" if not stopped else "X",
                    edgecolors="black",
                    vmin=1,
                    vmax=8,
                    label="stopped early by ASHA" if stopped else "ran to the end",
                )
            if points is not None and k_key in data:
                fig.colorbar(points, ax=ax, label="negatives per positive")
            ax.legend(fontsize=8, loc="lower left")
            if len(data):
                top = data.iloc[0]
                ax.annotate("best", (top[FRACTION_KEY], top[metric]), textcoords="offset points", xytext=(6, 6))
        ax.set_xlabel("also-view share of negatives (sampling.also_view_fraction)")
        ax.set_ylabel(f"{metric} (last reported epoch)")
        ax.set_title("Tuning: the also-view / random balance")
        ax.set_xlim(-0.05, 1.05)
        ax.grid(alpha=0.3)


def plot_comparison(table: pd.DataFrame, baselines: dict[str, dict[str, float]], split: str, path: Path) -> None:
    """Each PLOTTED metric per protocol against the also-view fraction (mean +- std over seeds),
    the baselines and peers as horizontal lines."""
    protocols = [p for p in PROTOCOLS if p != "sampled99"]  # sampled100 less one item: the same curve
    size = (4.2 * len(protocols), 3.4 * len(PLOTTED))
    with saved_figure(path, 100, len(PLOTTED), len(protocols), figsize=size, squeeze=False) as (fig, axes):
        styles = {
            "popularity": "--",
            "random": ":",
            "cooccurrence": "-.",
            "related": (0, (3, 1, 1, 1)),
            "als": (0, (5, 1)),
            "bpr": (0, (1, 2)),
        }
        for r, metric in enumerate(PLOTTED):
            for c, protocol in enumerate(protocols):
                ax = axes[r][c]
                key = f"{split}/{protocol}/{metric}"
                ax.errorbar(
                    table["fraction"],
                    table[f"{key} mean"],
                    yerr=table[f"{key} std"],
                    marker="o",
                    capsize=3,
                    label="model (mean ± std over seeds)",
                )
                for name, metrics in baselines.items():
                    value = metrics.get(key, math.nan)
                    if np.isfinite(value):
                        ax.axhline(value, linestyle=styles.get(name, "--"), color="grey", linewidth=1)
                        ax.annotate(
                            name,
                            (1.0, value),
                            xytext=(-4, 2),
                            textcoords="offset points",
                            ha="right",
                            fontsize=7,
                            color="grey",
                        )
                ax.set_title(f"{protocol}: {metric}")
                ax.set_xlabel("also-view fraction")
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7, loc="best")
        fig.suptitle(f"Also-view vs random negatives ({split} split)")
