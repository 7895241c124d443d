"""The run directory and the checkpoint format: what a run writes, and how it is read back.

A run directory (`<train.runs_dir>/<train.run_name>`) holds `config.yaml` (the resolved config),
`metrics.json`, `history.csv` and `model.pt` (the weights of the best epoch); Ray Train keeps
one `checkpoint_*/checkpoint.pt` per epoch under the same folder. Every file holds tensors and
plain values only (numbers, strings, lists, dicts) and is read with ``weights_only=True``, so
opening a run file never runs code from it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alsoview.config import Config, config_from_dict, save_config
from alsoview.errors import UserError, first_line
from alsoview.model.scorer import MODEL_FORMAT
from alsoview.storage import clear_leftovers, publish, remove_staging, replace_file, staging_beside

log = logging.getLogger("alsoview")

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
EVALUATION_FILE = "evaluation.json"  # every scorer's test metrics (`alsoview evaluate`)
HISTORY_FILE = "history.csv"
DATASET_DIR = "dataset"  # the run's copy of its prepared dataset: it scores wherever it is copied
ERROR_FILE = "error.log"  # the whole traceback of a failed run (the CLI prints one line)


def start_run_dir(config: Config, run_dir: Path) -> Path:
    """Create a run directory and record the resolved config in it, so it says exactly what ran."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / CONFIG_FILE)
    return run_dir


RUN_LOCK = ".alsoview.lock"  # held by the process training the run (train.claim_run)
RUN_OUTPUTS = (MODEL_FILE, HISTORY_FILE, METRICS_FILE, DATASET_DIR)  # each replaced whole at the end


def clear_run_leftovers(run_dir: Path) -> None:
    """The temporary copies of a run's outputs that a killed run left (never read), removed."""
    for name in RUN_OUTPUTS:
        clear_leftovers(run_dir / name)


@dataclass
class LoopState:
    """Where training stands: the last finished epoch, early stopping, and every epoch's metrics."""

    epoch: int = -1  # last finished epoch
    best_value: float = -math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    best_model_state: dict[str, torch.Tensor] | None = None
    resumed_from_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # every epoch's metrics, resumes included

    def record(self, epoch: int, value: float, model_state: dict[str, torch.Tensor], patience: int) -> bool:
        """Take one epoch's validation value; keep the best weights; True when training should stop
        (`patience` epochs without improvement; 0 never stops)."""
        self.epoch = epoch
        if value > self.best_value:
            self.best_value, self.best_epoch, self.epochs_without_improvement = value, epoch, 0
            self.best_model_state = state_to_cpu(model_state)
        else:
            self.epochs_without_improvement += 1
        return 0 < patience <= self.epochs_without_improvement

    def counters(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("epoch", "best_value", "best_epoch", "epochs_without_improvement")}


def state_to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values (JSON and weights-only loading accept only those)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------- per-epoch checkpoints


def save_checkpoint(
    folder: str | Path,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    state: LoopState,
    config: Config,
    vocabulary: dict[str, int],
) -> None:
    torch.save(
        {
            "model": state_to_cpu(model_state),
            "optimizer": optimizer_state,
            "best_model": state.best_model_state,
            "history": plain(state.history),
            "loop": plain(state.counters()),
            "vocabulary": dict(vocabulary),
            "config": plain(config.to_dict()),
            "model_format": MODEL_FORMAT,
        },
        Path(folder) / CHECKPOINT_FILE,
    )


@dataclass(frozen=True)
class SavedCheckpoint:
    """One epoch's checkpoint as read back."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    vocabulary: dict[str, int]
    config: Config
    state: LoopState

    def check_resumable(self, where: Path | str, vocabulary: dict[str, int]) -> None:
        """Training continues from this checkpoint only on the same dataset (its vocabulary sizes)."""
        if self.vocabulary != vocabulary:
            raise UserError(
                f"{where} was trained on another dataset (vocabulary {self.vocabulary} vs {vocabulary}); "
                f"use another train.run_name"
            )


def load_checkpoint(folder: str | Path) -> SavedCheckpoint:
    raw = _load(Path(folder) / CHECKPOINT_FILE)
    state = LoopState(**raw["loop"], best_model_state=raw["best_model"], history=raw["history"])
    state.resumed_from_epoch = state.epoch
    config = config_from_dict(raw["config"])
    return SavedCheckpoint(raw["model"], raw["optimizer"], raw["vocabulary"], config, state)


def checkpoint_dirs(run_storage: str | Path) -> list[Path]:
    """The checkpoint folders Ray Train wrote for a run that hold a checkpoint file, oldest first
    (their names are timestamps); a folder cut off before its file was written is not one."""
    folder = Path(run_storage)
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("checkpoint_*")) if (p / CHECKPOINT_FILE).is_file()]


def latest_checkpoint(run_storage: str | Path) -> tuple[Path, SavedCheckpoint] | None:
    """The newest checkpoint of a run that loads; each newer one that does not (truncated by a
    full disk or a killed writer) is named in the log and skipped, so it cannot block a resume."""
    for folder in reversed(checkpoint_dirs(run_storage)):
        try:
            return folder, load_checkpoint(folder)
        except OlderFormatError:
            raise  # a run of an older model format: training over it would mix two models
        except UserError as exc:
            if folder not in _SKIPPED:  # a run looks more than once: said once
                log.warning("skipping a checkpoint that does not load: %s", exc)
                _SKIPPED.add(folder)
    return None


_SKIPPED: set[Path] = set()  # the checkpoints this process found cut short, already named in the log


def newer_on_disk(restored: SavedCheckpoint | None, run_storage: str | Path) -> tuple[Path, SavedCheckpoint] | None:
    """The newest checkpoint on disk that loads, when it is of a later epoch than `restored` (the
    one Ray Train restored; None: it restored none), else None.

    Every checkpoint on disk is of a finished epoch (rank 0 writes it after the epoch's
    validation, and Ray Train moves it into place whole or leaves a file that does not load), but
    Ray Train restores only those whose reports it registered: a run stopped by Ctrl-C or kill -9
    right after an epoch, or a lost worker, leaves newer ones that it does not know about.
    """
    found = latest_checkpoint(run_storage)
    if found is None or (restored is not None and found[1].state.epoch <= restored.state.epoch):
        return None
    return found


def prune_checkpoints(run_storage: str | Path, keep: int) -> list[Path]:
    """Remove a run's checkpoint folders older than its newest `keep` (train.num_to_keep).

    Ray Train keeps `num_to_keep` of the checkpoints it registered itself; those of an attempt
    that failed, or of a driver that was killed, are not among them and would stay for ever.
    """
    removed = checkpoint_dirs(run_storage)[:-keep] if keep > 0 else []
    for folder in removed:
        shutil.rmtree(folder)
    if removed:
        log.info("removed %d checkpoint(s) older than the newest %d in %s", len(removed), keep, run_storage)
    return removed


# ---------------------------------------------------------------- the finished run


@dataclass(frozen=True)
class SavedModel:
    """model.pt: the best epoch's weights with what is needed to rebuild the model."""

    state: dict[str, torch.Tensor]
    vocabulary: dict[str, int]
    config: Config
    epoch: int


def write_run_outputs(run_dir: Path, checkpoint: SavedCheckpoint, dataset: str) -> dict[str, Any]:
    """model.pt (best weights), history.csv and metrics.json of a finished run, from its last checkpoint."""
    import pandas as pd

    state = checkpoint.state
    # Each file replaces the previous one whole (storage.replace_file): a run killed or out of disk
    # while writing them leaves the last complete ones, and running it again writes them anew.
    with replace_file(run_dir / MODEL_FILE) as partial:
        torch.save(
            {
                "model": state.best_model_state,
                "vocabulary": checkpoint.vocabulary,
                "config": plain(checkpoint.config.to_dict()),
                "epoch": state.best_epoch,
                "model_format": MODEL_FORMAT,
            },
            partial,
        )
    history = state.history
    with replace_file(run_dir / HISTORY_FILE) as partial:
        pd.DataFrame(history).to_csv(partial, index=False)
    last = history[-1]
    metrics = {
        **{k: v for k, v in last.items() if k.startswith(("valid/", "train/", "best/"))},
        "epochs_total": len(history),
        "last_epoch": last["epoch"],
        "resumed_from_epoch": last["resumed_from_epoch"],
        "early_stopped": bool(last.get("early_stopped", False)),
        "model": f"{MODEL_FILE} holds the weights of best/epoch",
        "dataset": dataset,
    }
    write_metrics(run_dir, metrics)
    copy_dataset(Path(dataset), run_dir)
    return metrics


def copy_dataset(prepared_dir: Path, run_dir: Path) -> None:
    """The prepared dataset's files into `<run>/dataset/`: scoring needs the catalog (ids, titles,
    features, who had what), so a run folder copied to another machine recommends there too."""
    from alsoview.data import layout

    clear_leftovers(run_dir / DATASET_DIR)
    staging = staging_beside(run_dir / DATASET_DIR)  # published whole: a cut copy is never read as one
    try:
        for name in layout.FILES:
            shutil.copy2(prepared_dir / name, staging / name)
        publish(staging, run_dir / DATASET_DIR)
    finally:
        remove_staging(staging)


def run_dataset(run_dir: Path, saved: SavedModel) -> Path:
    """The prepared dataset a run scores with: its own copy, else (a run written before runs
    carried one) the dataset its config names."""
    from alsoview.data import layout

    own = Path(run_dir) / DATASET_DIR
    return own if (own / layout.MANIFEST).is_file() else Path(saved.config.data.prepared_dir)


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    with replace_file(Path(run_dir) / METRICS_FILE) as partial:
        partial.write_text(json.dumps(plain(metrics), indent=2) + "\n")


def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def read_evaluation(run_dir: Path) -> dict[str, dict[str, float]]:
    """The run's last test evaluation, `{scorer: {metric: value}}`; empty when it has none."""
    path = Path(run_dir) / EVALUATION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def find_run(run: str | Path) -> Path:
    """The run directory `run` names: a path as given, else a run name under the default runs
    folder (`<storage>/runs/<name>`, storage as $ALSOVIEW_HOME or ~/alsoview). A tuning run
    stands for its final model in `best/`. Nothing found is one line naming every place looked."""
    from alsoview.config.paths import storage_root

    as_given = Path(run).expanduser()
    places = [as_given]
    if not as_given.is_absolute() and len(as_given.parts) == 1:
        default = Config()
        places.append(storage_root(default) / default.train.runs_dir / as_given)
    for place in places:
        if (place / MODEL_FILE).is_file():
            return place.resolve()
        if (place / "best" / MODEL_FILE).is_file():
            log.info("%s is a tuning run: using its final model in %s", place, place / "best")
            return (place / "best").resolve()
    existing = [place for place in places if place.is_dir()]
    if existing:
        return existing[0].resolve()  # a run folder without a model: load_saved_model says so
    if len(places) == 1:
        raise UserError(f"no run directory {as_given} (give a run directory, or the name of a run under runs/)")
    raise UserError(
        f"no run {str(run)!r}: neither {places[0]} nor {places[1]} exists (give a run directory or a run name)"
    )


def load_saved_model(run_dir: str | Path) -> SavedModel:
    """model.pt of a finished run."""
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise UserError(f"no trained model in {run_dir} (missing {MODEL_FILE}); run `alsoview train` first")
    raw = _load(path)
    return SavedModel(raw["model"], raw["vocabulary"], config_from_dict(raw["config"]), int(raw["epoch"]))


class OlderFormatError(UserError):
    """A run file another model format wrote: never skipped as if it were damaged."""


def _load(path: Path) -> dict[str, Any]:
    """A run file, loaded as tensors and plain data only; anything else is refused in one line."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise UserError(f"{path}: not a readable alsoview run file ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: not an alsoview run file")
    written = raw.get("model_format", 1)
    if written != MODEL_FORMAT:
        raise OlderFormatError(
            f"{path}: written by an older alsoview (model format {written}, this one reads {MODEL_FORMAT}); "
            f"train it again (a new train.run_name, or remove the run folder)"
        )
    return raw
