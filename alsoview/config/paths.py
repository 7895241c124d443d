"""Where a config's paths resolve (`storage_root`, `with_absolute_paths`).

What alsoview writes resolves against `storage` (else $ALSOVIEW_HOME, else ~/alsoview); what the
user named (input files, a text model), against the current directory.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
import urllib.request
from pathlib import Path

from alsoview.config.schema import Config

STORAGE_ENV = "ALSOVIEW_HOME"
DEFAULT_STORAGE = "~/alsoview"


def storage_root(config: Config) -> Path:
    """The folder relative output paths resolve against: `storage`, else $ALSOVIEW_HOME, else ~/alsoview.

    Not the current directory: a `ray job submit` driver runs in Ray's temporary copy of the
    working directory, which is deleted with the Ray session (the way Ray Tune defaults to
    ~/ray_results for the same reason).
    """
    raw = config.storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    return Path(raw).expanduser().resolve()


def with_absolute_paths(config: Config) -> Config:
    """Every path made absolute, so runs and jobs agree on where things are (idempotent).

    What a run reads that the user named (review and meta files, a text model) resolves against
    the current directory, where the user typed it; what alsoview writes (generated data,
    prepared datasets, runs) resolves against `storage_root`.
    """
    root = storage_root(config)

    def written(path: str) -> str:
        return str((root / Path(path).expanduser()).resolve())

    def read(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    data = dataclasses.replace(
        config.data,
        reviews=[read(p) for p in config.data.reviews],
        meta=[read(p) for p in config.data.meta],
        generated_dir=written(config.data.generated_dir),
        prepared_dir=written(config.data.prepared_dir),
    )
    text = config.text
    if text.model_path is not None:
        text = dataclasses.replace(text, model_path=read(text.model_path))
    train = dataclasses.replace(config.train, runs_dir=written(config.train.runs_dir))
    tracking = dataclasses.replace(
        config.tracking,
        mlflow_uri=mlflow_uri(config.tracking.mlflow_uri, root),
        wandb_dir=written(config.tracking.wandb_dir or WANDB_DIR),
    )
    return dataclasses.replace(config, data=data, text=text, train=train, tracking=tracking, storage=str(root))


MLFLOW_DIR = "mlruns"  # MLflow's own name for a file store, under the storage root by default
WANDB_DIR = "wandb"  # the folder W&B writes into, under the storage root by default


def mlflow_uri(raw: str | None, root: Path) -> str:
    """MLflow's tracking URI: a plain path or a `file:` URI as an absolute `file:///...` URI (a
    relative one under `root`, like every written path; None: `<root>/mlruns`); any other URI
    (`http://`, `sqlite:///`) as it is, for MLflow to read."""
    raw = MLFLOW_DIR if raw is None else raw
    if raw.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlparse(raw).path)
    elif "://" in raw:
        return raw
    else:
        path = raw
    return (root / Path(path).expanduser()).resolve().as_uri()
