"""The few lines a command ends with: what it made, how good it is, what to run next.

Rounded figures for people; the full-precision results stay in the run's files (and `--json`
prints them for scripts). A verdict names the strongest baseline on the same users and says a
loss plainly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

VERDICT_METRIC = "full/ndcg@10"  # what recommending does: the held-out item among every item


def figure(value: Any) -> str:
    """A metric as people read it: 4 decimals; missing or not a number as 'n/a'."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.4f}" if math.isfinite(number) else "n/a"


def verdict(model: float, references: Mapping[str, Mapping[str, float]], key: str) -> str:
    """`key: model X, 1.08x the strongest baseline, cooccurrence (Y)` or, plainly, that it lost."""
    others = {name: m[key] for name, m in references.items() if key in m and math.isfinite(m[key])}
    if not math.isfinite(model) or not others:
        return f"{key}: model {figure(model)} (no baseline to compare with)"
    strongest = max(others, key=others.__getitem__)
    bar = others[strongest]
    ratio = f"{model / bar:.2f}x" if bar > 0 else "above 0"
    if model > bar:
        return f"{key}: model {figure(model)}, {ratio} the strongest baseline, {strongest} ({figure(bar)})"
    return (
        f"{key}: model {figure(model)} does NOT beat the strongest baseline, {strongest} ({figure(bar)}; "
        f"model at {ratio})"
    )


def train_lines(
    run_dir: Path,
    name: str,
    metrics: Mapping[str, Any],
    best_row: Mapping[str, Any],
    references: Mapping[str, Mapping[str, float]],
) -> list[str]:
    """The end of `alsoview train`: epochs, the best epoch's validation figures, the verdict on
    the validation users, where the run is, and the next command."""
    epochs = int(metrics.get("epochs_total", 0))
    best_epoch = int(metrics.get("best/epoch", best_row.get("epoch", -1)))
    stopped = " (stopped early)" if metrics.get("early_stopped") else ""
    key = f"valid/{VERDICT_METRIC}"
    lines = [
        f"trained {name}: {epochs} epochs{stopped}, best epoch {best_epoch}",
        f"validation at epoch {best_epoch}: full NDCG@10 {figure(best_row.get(key))}, "
        f"full HR@10 {figure(best_row.get('valid/full/hr@10'))}, "
        f"sampled100 HR@10 {figure(best_row.get('valid/sampled100/hr@10'))}",
    ]
    if references:
        lines.append(verdict(float(best_row.get(key, math.nan)), references, key) + " on the same validation users")
    lines += [
        f"run: {run_dir}  (model.pt, history.csv, metrics.json, learning_curves.png, tensorboard/, dataset/)",
        f"next: alsoview evaluate --run {name}    (the test split against every baseline and peer)",
    ]
    return lines


def evaluate_lines(run_dir: Path, run_arg: str, results: Mapping[str, Mapping[str, float]], split: str) -> list[str]:
    """The end of `alsoview evaluate`: the verdict on the split, the files, the next command."""
    key = f"{split}/{VERDICT_METRIC}"
    references = {name: m for name, m in results.items() if name not in ("model", "random")}
    model = float(results.get("model", {}).get(key, math.nan))
    return [
        *headline_table(results, split),
        "",
        verdict(model, references, key),
        f"written: {run_dir / 'evaluation.md'} (every protocol and metric), evaluation.json, metrics.json",
        f"next: alsoview recommend --run {run_arg} --user REVIEWER_ID",
    ]


def prepare_lines(out_dir: Path, manifest: Mapping[str, Any]) -> list[str]:
    """The end of `alsoview prepare`: what was kept and dropped, and why."""
    rows, counts = manifest.get("rows", {}), manifest.get("counts", {})
    lines = [f"prepared dataset: {out_dir}"]
    for kind in ("reviews", "meta"):
        part = rows.get(kind, {})
        reasons = {reason: n for reason, n in manifest.get("dropped", {}).get(kind, {}).items() if n}
        why = ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"  {kind}: {part.get('read', 0):,} lines read, {part.get('kept', 0):,} kept, "
            f"{part.get('dropped', 0):,} dropped{f' ({why})' if why else ''}"
        )
    lines.append(
        f"  {counts.get('users', 0):,} users, {counts.get('items', 0):,} items, "
        f"{counts.get('interactions', 0):,} interactions; text vectors: {manifest.get('text_encoder', {}).get('name')}"
    )
    lines.append(f"next: alsoview train {_data_overrides(out_dir, manifest)}")
    lines.append("  (train reuses this dataset while the data and text settings stay the same)")
    return lines


def _data_overrides(out_dir: Path, manifest: Mapping[str, Any]) -> str:
    """The `data.*` overrides that point a run at this prepared dataset and its inputs."""
    inputs = manifest.get("inputs", {})
    words = []
    for role in ("reviews", "meta"):
        paths = [str(entry.get("path")) for entry in inputs.get(role, [])]
        if paths:
            words.append(f"data.{role}=[{','.join(paths)}]")
    return " ".join([*words, f"data.prepared_dir={out_dir}"])


def generate_lines(out_dir: Path, users: int, items: int, reviews: int, meta_lines: int, seconds: float) -> list[str]:
    """The end of `alsoview generate`: what was written, and how to prepare it."""
    return [
        f"generated {reviews:,} reviews of {items:,} games by {users:,} users, {meta_lines:,} meta lines, "
        f"in {seconds:.1f} s: {out_dir}",
        f"next: alsoview prepare --reviews {out_dir}/reviews.json.gz --meta {out_dir}/meta.json.gz --out DIR",
    ]


# What each source's score is, so a printed number says what it measures.
SCORE_MEANING = {
    "model": "score (model logit)",
    "popularity (unknown user)": "score (training reviews)",
}


def recommendation_lines(user: str, frame: Any, title_width: int = 48) -> list[str]:
    """`alsoview recommend --user`: a header naming what the score is, then one line per item.
    A user the run does not know gets the most popular items, and the header says so."""
    if len(frame) == 0:
        return [f"no recommendations for {user!r}: the run's catalog has no item they have not had"]
    source = str(frame["source"].iloc[0])
    if source == "model":
        header = f"top {len(frame)} for {user}"
    else:
        header = f"top {len(frame)} for {user}: not a user of this run's data, so the most popular items"
    lines = [header, f"  rank  asin        {'title':<{title_width}}  {SCORE_MEANING.get(source, 'score')}"]
    for row in frame.itertuples(index=False):
        title = str(row.title)[:title_width]
        lines.append(f"  {row.rank:4d}  {row.asin:<10}  {title:<{title_width}}  {row.score:.3f}")
    return lines


def visitor_lines(asins: list[str], frame: Any, fallback: str | None, title_width: int = 48) -> list[str]:
    """`alsoview recommend --items`: a header naming the visitor's games and, when the model
    cannot describe a visitor by their items, what scored them instead."""
    shown = ", ".join(asins[:3]) + (f" and {len(asins) - 3} more" if len(asins) > 3 else "")
    if len(frame) == 0:
        return [f"no recommendations for a visitor with {shown}: no item of the catalog is left"]
    header = f"top {len(frame)} for a visitor with {shown}"
    meaning = "score (model logit)"
    if fallback is not None:
        header += f"; scored by {fallback}"
        meaning = "score" if fallback.startswith("the model") else "score (users who had both)"
    lines = [header, f"  rank  asin        {'title':<{title_width}}  {meaning}"]
    for row in frame.itertuples(index=False):
        lines.append(f"  {row.rank:4d}  {row.asin:<10}  {str(row.title)[:title_width]:<{title_width}}  {row.score:.3f}")
    return lines


# The columns a person reads first; evaluation.md keeps every protocol and metric.
HEADLINE_COLUMNS = (
    ("full/ndcg@10", "full NDCG@10"),
    ("full/hr@10", "full HR@10"),
    ("sampled100/hr@10", "sampled100 HR@10"),
    ("sampled99/hr@5", "sampled99 HR@5"),
    ("hard/auc", "hard AUC"),
)


def headline_table(results: Mapping[str, Mapping[str, float]], split: str) -> list[str]:
    """Every scorer's headline figures, best first on full NDCG@10, as aligned plain text."""
    key = f"{split}/{VERDICT_METRIC}"
    order = sorted(results, key=lambda name: -_number(results[name].get(key)))
    width = max(len("scorer"), *(len(name) for name in order))
    header = f"{'scorer':<{width}}  " + "  ".join(f"{title:>{len(title)}}" for _, title in HEADLINE_COLUMNS)
    lines = [header]
    for name in order:
        cells = [
            f"{figure(results[name].get(f'{split}/{column}')):>{len(title)}}" for column, title in HEADLINE_COLUMNS
        ]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return lines


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return number if math.isfinite(number) else -math.inf


def similar_lines(asin: str, title: str, frame: Any, title_width: int = 48) -> list[str]:
    """`alsoview similar`: the item, then one line per similar item with what the figure is."""
    if len(frame) == 0:
        return [f"nothing like {asin} ({title}) by this measure"]
    lines = [f"most like {asin} ({title}), by {frame['source'].iloc[0]}"]
    lines.append(f"  rank  asin        {'title':<{title_width}}  similarity")
    for row in frame.itertuples(index=False):
        lines.append(
            f"  {row.rank:4d}  {row.asin:<10}  {str(row.title)[:title_width]:<{title_width}}  {row.similarity:.3f}"
        )
    return lines
