"""Limits every config obeys beside its sections' own ranges: each number finite, each size below
a ceiling that says why. An absurd value (`train.learning_rate=1e308`, `text.dim=100000000`) is a
typo, and refused in one line before it costs memory or a run, rather than discovered deep in
training."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from alsoview.errors import check_setting

EPOCHS = 100_000  # an epoch passes over every training pair; this many is a typo for fewer
# key -> (the largest value, why): sizes of memory, work or files, and numbers open above
LIMITS: dict[str, tuple[int, str]] = {  # whole numbers, also for float settings
    "data.generate_users": (10_000_000, "the generator holds its users' tables in memory"),
    "data.generate_items": (1_000_000, "the generator holds its items' tables in memory"),
    "data.error_examples": (1_000, "each drop reason keeps this many file:line examples in the manifest"),
    "data.read_chunk_lines": (10_000_000, "a parsing task holds this many raw lines at once"),
    "text.dim": (4_096, "each item stores this many floats; sentence encoders give 384 to 1,024"),
    "text.batch_size": (65_536, "an embedding actor holds this many descriptions' tensors at once"),
    "text.actors": (1_024, "each actor loads its own copy of the text model"),
    "sampling.negatives_per_positive": (1_000_000, "a positive and its negatives are scored in one batch"),
    "sampling.candidates_per_negative": (100, "every candidate is drawn and scored to keep one"),
    "sampling.also_view_warmup_epochs": (EPOCHS, "as train.epochs"),
    "sampling.block_rows": (10_000_000, "a mixing task holds a block's samples in memory"),
    "sampling.blocks_per_task": (10_000, "a mixing task's output is one object of all its blocks"),
    "model.embedding_dim": (4_096, "every user and item holds a vector this long"),
    "train.epochs": (EPOCHS, "an epoch passes over every training pair; this many is a typo for fewer"),
    "train.batch_size": (4_194_304, "a batch's samples and scores are held at once"),
    "train.num_workers": (4_096, "each worker is a process with a copy of the model"),
    "train.num_to_keep": (1_000, "each checkpoint is a copy of the model on disk"),
    "train.max_failures": (1_000, "a run that failed this often will not finish"),
    "train.valid_users": (100_000_000, "each is scored against every item after every epoch"),
    "train.patience": (EPOCHS, "as train.epochs"),
    "tune.num_samples": (100_000, "each trial is a training run"),
    "tune.max_concurrent_trials": (4_096, "each trial at once holds its own workers"),
    "tune.max_epochs": (EPOCHS, "as train.epochs"),
    "tune.grace_period": (EPOCHS, "as train.epochs"),
    "tune.reduction_factor": (1_000, "ASHA keeps one trial in this many at each rung"),
    "train.learning_rate": (10, "Adam moves each weight by about this much per step"),
    "train.softmax_temperature": (1_000, "the logits are divided by it: above this every item scores alike"),
    "sampling.popularity_exponent": (10, "above this every random negative is the most popular item"),
}
SEED_LIMIT = 2**32  # numpy's and torch's seeds take 32-bit values everywhere


def check_bounds(config: Any) -> None:
    """Every float setting finite; every key of LIMITS at most its ceiling (a model part bounds
    its own settings in its `validate`); the seed a 32-bit value. A part that is off has no
    settings to check."""
    for key, value in _settings(config, ""):
        if isinstance(value, float):
            check_setting(math.isfinite(value), key, "a finite number", value)
        if key in LIMITS and value is not None:
            limit, why = LIMITS[key]
            check_setting(value <= limit, key, f"<= {limit:,} ({why})", value)
    seed = config.seed
    check_setting(0 <= seed < SEED_LIMIT, "seed", f"in [0, {SEED_LIMIT:,}) (a 32-bit seed)", seed)


def _settings(node: Any, prefix: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every plain setting under a config dataclass, parts included."""
    found: list[tuple[str, Any]] = []
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += _settings(value, f"{prefix}{field.name}.")
        elif not isinstance(value, bool):
            found.append((f"{prefix}{field.name}", value))
    return found
