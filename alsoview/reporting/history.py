"""A run's history as files people look at: `learning_curves.png` (`plots.plot_learning_curves`)
and TensorBoard event files in `tensorboard/` (one scalar per history column per epoch).

The driver writes both from the history rows (every epoch's metrics, resumes included), so they
are the same whichever workers ran the epochs, and written again in full each time: a resumed
run's folder holds one history, not one file per attempt.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from alsoview.logs import tensorboard_hint
from alsoview.reporting.plots import plot_learning_curves

log = logging.getLogger("alsoview")

CURVES_FILE = "learning_curves.png"
TENSORBOARD_DIR = "tensorboard"
EVENT_FILES = "events.out.tfevents.*"
STEP = "epoch"  # the history column that is every scalar's step


def summary_writer() -> Any:
    """A SummaryWriter class: tensorboardX's (a dependency: Tune writes its trials' event files
    with it), else torch's (it needs the tensorboard package); None when neither imports."""
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    except ImportError:
        return None


def tag(column: str) -> str:
    """A history column as a TensorBoard tag: characters a tag may not hold as `_`, as
    tensorboardX renames them in Tune's files (`valid/full/ndcg@10` -> `valid/full/ndcg_10`)."""
    return re.sub(r"[^-/\w.]", "_", column)


def scalars(history: pd.DataFrame) -> Iterator[tuple[str, int, float]]:
    """(tag, epoch, value) for every numeric history column but the epoch, values that are not
    finite numbers left out (TensorBoard draws no gap for them)."""
    for column in history.columns:
        if column == STEP:
            continue
        values = pd.to_numeric(history[column], errors="coerce")
        for epoch, value in zip(history[STEP], values):
            if pd.notna(value) and math.isfinite(float(value)):
                yield tag(column), int(epoch), float(value)


def write_tensorboard(history: pd.DataFrame, folder: Path) -> Path | None:
    """TensorBoard event files of `history` in `folder`, replacing the ones there; None (nothing
    written) when no SummaryWriter imports."""
    writer_class = summary_writer()
    if writer_class is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(EVENT_FILES):  # the whole history is written again
        old.unlink()
    writer = writer_class(str(folder))
    try:
        for name, epoch, value in scalars(history):
            writer.add_scalar(name, value, epoch)
    finally:
        writer.close()
    return folder


def write_history_views(run_dir: Path, rows: Sequence[Mapping[str, Any]], metric: str, loss: str) -> str:
    """learning_curves.png and tensorboard/ in `run_dir` from a run's history rows (`metric`: the
    one the best epoch is chosen by; `loss`: the loss panel's title, `plots.loss_title`); the one
    line that says where they are, or what is missing and why."""
    run_dir = Path(run_dir)
    history = pd.DataFrame(list(rows))
    if history.empty or STEP not in history:
        return f"learning curves: none yet (no epoch finished in {run_dir})"
    curves = run_dir / CURVES_FILE
    try:
        plot_learning_curves(history, metric, curves, loss)
        figure: object = curves
    except ImportError:
        figure = f"no {CURVES_FILE} (matplotlib is not installed: pip install matplotlib)"
    folder = write_tensorboard(history, run_dir / TENSORBOARD_DIR)
    if folder is None:
        return f"learning curves: {figure}; no TensorBoard files (pip install tensorboard enables them)"
    return tensorboard_hint(folder, figure)
