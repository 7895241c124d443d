"""The tuning search space's grammar: `section -> key -> {kind: arguments}` (`tune.search_space`).

Kinds: uniform [lo, hi], loguniform [lo, hi], choice [values...], randint [lo, hi). A key set to
null is left out of the search. This module knows the grammar only; which keys exist is the
schema's (`_check_search_spec` is handed the `Config` class), so schema.py can import it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from alsoview.errors import UserError

SEARCH_KINDS = ("uniform", "loguniform", "choice", "randint")
# Keys the resource plan of a search depends on: it is made once, before the first trial.
_PLANNED = "the search's resource plan (trials at once, each one's CPUs) is made once from it"
UNSEARCHABLE = {
    key: _PLANNED for key in ("train.num_workers", "train.use_gpu", "train.cpus_per_worker", "sampling.cpus_per_task")
}


def _default_search_space() -> dict[str, Any]:
    return {
        "sampling": {"also_view_fraction": {"uniform": [0.0, 1.0]}, "negatives_per_positive": {"choice": [1, 2, 4, 8]}},
        "train": {"learning_rate": {"loguniform": [0.001, 0.03]}},
        "model": {
            "dropout": {"uniform": [0.0, 0.6]},
            "embedding_dim": {"choice": [16, 32, 64]},
            "product_interaction": {"choice": [False, True]},
            "user_history": {"choice": [False, True]},
            "dot_product": {"choice": [False, True]},
        },
    }


def is_search_spec(value: Any) -> bool:
    """Whether `value` is one key's search, `{kind: arguments}`: a leaf of the space, not a section.

    A YAML search space refines the default key by key (overrides.py), but a spec is one value:
    `dropout: {choice: [...]}` replaces the default's `{uniform: [...]}` instead of joining it.
    """
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SEARCH_KINDS


def flatten_search_space(space: dict, prefix: str = "") -> dict[str, dict]:
    """{"sampling": {"k": {"choice": [...]}}} -> {"sampling.k": {"choice": [...]}}; null entries dropped."""
    flat: dict[str, dict] = {}
    for key, value in space.items():
        dotted = f"{prefix}{key}"
        if value is None:
            continue
        if is_search_spec(value):
            flat[dotted] = value
        elif isinstance(value, dict):
            flat.update(flatten_search_space(value, dotted + "."))
        else:
            raise UserError(
                f"config: tune.search_space.{dotted} must be {{kind: arguments}} with kind one of "
                f"{SEARCH_KINDS}, got {value!r}"
            )
    return flat


def _check_search_spec(key: str, spec: dict, config_cls: type) -> None:
    """One flattened entry checked: it names a key of `config_cls` (the `Config`), searchable, valid arguments."""
    where = f"tune.search_space.{key}"
    section, _, name = key.partition(".")
    section_type = {f.name: f.type for f in dataclasses.fields(config_cls)}.get(section)
    known = {f.name for f in dataclasses.fields(typing.get_type_hints(config_cls)[section])} if section_type else set()
    if name not in known:
        raise UserError(f"config: {where} names no config key")
    if key in UNSEARCHABLE:
        raise UserError(f"config: {where} cannot be searched: {UNSEARCHABLE[key]}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        _require(isinstance(args, list) and len(args) >= 1, where, "a non-empty list for choice", args)
    else:
        ok = isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)
        _require(ok and args[0] < args[1], where, f"[low, high] with low < high for {kind}", args)
        if kind == "loguniform":
            _require(args[0] > 0, where, "positive bounds for loguniform", args)


def _require(ok: bool, key: str, expected: str, got: Any) -> None:
    # schema._check's message; schema.py imports this module, so this one cannot import that.
    if not ok:
        raise UserError(f"config: {key} must be {expected} (got {got!r})")
