"""`alsoview compare`: does mixing also-view negatives help, and at which balance?

One model per (also-view fraction, seed), all with the same config and epoch budget, trained as
a Ray Tune grid (trials run side by side as the cluster allows; the same name resumes), then
every model and the baselines are scored on the same test cases and protocols.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alsoview import checkpoint as runs
from alsoview.config import Config, check_plain_name
from alsoview.errors import RunFailedError, UserError, first_line, own_error_in
from alsoview.evaluate import ModelFactory, evaluate_scorers
from alsoview.logs import verbose
from alsoview.protocols import PROTOCOLS, REPORT_COLUMNS, build_cases, reference_scorers, skipped_note

log = logging.getLogger("alsoview")

PLOTTED = ("ndcg@10", "auc")


def parse_fractions(text: str) -> list[float]:
    try:
        fractions = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--fractions must be comma-separated numbers, got {text!r}") from None
    if not fractions or any(not 0 <= f <= 1 for f in fractions):
        raise UserError(f"--fractions must be numbers in [0, 1], got {text!r}")
    return fractions


@dataclass
class CompareResult:
    run_dir: Path
    table: pd.DataFrame  # one row per fraction: mean and std over seeds of every metric
    baselines: dict[str, dict[str, float]]


def compare(
    config: Config, fractions: list[float], seeds: int, name: str = "compare", max_users: int | None = None
) -> CompareResult:
    """Train the grid fractions x seeds, evaluate every model and the baselines, write the report."""
    import ray
    import ray.train
    from ray import tune as ray_tune

    from alsoview.resources import plan_resources
    from alsoview.runtime import start_run
    from alsoview.tune import TrialLog, check_some_trial_ran, restore_or_start, trial_trainable

    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    check_plain_name(name, "--name")
    begun = start_run(config, name)
    config, catalog, run_dir = begun.config, begun.catalog, begun.run_dir

    grid_size = len(fractions) * seeds
    plan = plan_resources(_with_samples(config, grid_size), ray.cluster_resources(), "compare")
    trainable = trial_trainable(config, catalog, plan, run_dir)

    def start_grid() -> Any:
        log.info(
            "comparing also-view fractions %s x %d seeds: %d models of %d epochs, %d at a time; resources: %s",
            fractions,
            seeds,
            grid_size,
            config.train.epochs,
            plan.runs,
            plan.summary(),
        )
        return ray_tune.Tuner(
            trainable,
            param_space={
                "sampling.also_view_fraction": ray_tune.grid_search(fractions),
                "seed": ray_tune.grid_search(list(range(config.seed, config.seed + seeds))),
            },
            tune_config=ray_tune.TuneConfig(max_concurrent_trials=plan.runs),
            run_config=ray_tune.RunConfig(
                name=name,
                storage_path=str(Path(config.train.runs_dir)),
                verbose=2 if verbose() else 0,  # TrialLog's lines instead of Tune's tables
                callbacks=[TrialLog(grid_size, config.train.early_stopping_metric)],
            ),
        )

    tuner = restore_or_start(run_dir, trainable, start_grid)
    grid = tuner.fit()
    check_some_trial_ran(grid)

    scorers: dict[str, Any] = {}
    trained: dict[str, dict[str, Any]] = {}
    for result in grid:
        # Train's TuneReportCallback passes the trial's latest Train checkpoint as a path in the metrics.
        path = (result.metrics or {}).get("checkpoint_path")
        if result.error is not None or path is None:
            cause = own_error_in(result.error) or result.error
            why = first_line(cause, 1000) if cause is not None else "no checkpoint reported"
            failed = UserError if isinstance(cause, UserError) else RunFailedError
            raise failed(f"comparison trial {result.config} failed: {why}")
        with ray.train.Checkpoint(path).as_directory() as folder:
            saved = runs.load_checkpoint(folder)
        key = f"model f={result.config['sampling.also_view_fraction']:g} seed={result.config['seed']}"
        scorers[key] = ModelFactory(saved.state.best_model_state, saved.config, catalog)
        trained[key] = {
            "fraction": result.config["sampling.also_view_fraction"],
            "seed": result.config["seed"],
            "best_epoch": saved.state.best_epoch,
            "epochs": len(saved.state.history),
        }
    references = reference_scorers(catalog, config.seed)
    cases = build_cases(catalog, "test", config.seed, max_users)
    results = evaluate_scorers({**scorers, **references.scorers}, cases)
    return write_report(run_dir, trained, results, list(references.scorers), cases.split, references.skipped)


def _with_samples(config: Config, samples: int) -> Config:
    """The config with tune.num_samples set to the grid's size, for planning its concurrency."""
    import dataclasses

    return dataclasses.replace(config, tune=dataclasses.replace(config.tune, num_samples=samples))


def write_report(
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
    (run_dir / "comparison.json").write_text(json.dumps(runs.plain(report), indent=2, default=str) + "\n")
    (run_dir / "comparison.md").write_text(_markdown(table, baselines, split) + skipped_note(skipped))
    _plot(table, baselines, split, run_dir / "comparison.png")
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


def _plot(table: pd.DataFrame, baselines: dict[str, dict[str, float]], split: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(PLOTTED), len(PROTOCOLS), figsize=(4.2 * len(PROTOCOLS), 3.4 * len(PLOTTED)), squeeze=False
    )
    styles = {"popularity": "--", "random": ":", "cooccurrence": "-.", "als": (0, (5, 1)), "bpr": (0, (1, 2))}
    for r, metric in enumerate(PLOTTED):
        for c, protocol in enumerate(PROTOCOLS):
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
