"""The tuning search space's grammar: `section -> key -> {kind: arguments}` (`tune.search_space`).

Kinds: uniform [lo, hi], loguniform [lo, hi], choice [values...], randint [lo, hi). A key set to
null is left out of the search. This module knows the grammar only; which keys exist is the
schema's (`_check_search_spec` is handed the `Config` class), so schema.py can import it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
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
            "also_view_relation": {"choice": [False, True]},
        },
    }


def _default_start_points() -> list[dict[str, Any]]:
    """The first trials of a search (`tune.start_points` unset), each completed from the config
    for the searched keys it does not name: the config as it is (for the built-in defaults, the
    original design), then the settings that won on real review data (README, "Quality on real
    data"), expressed in the default space: the users' items, a dot product, also-view as a
    relation, 8 negatives, lr 0.001. TPE explores from there."""
    return [
        {},
        {
            "sampling": {"also_view_fraction": 0.0, "negatives_per_positive": 8},
            "train": {"learning_rate": 0.001},
            "model": {"user_history": True, "dot_product": True, "also_view_relation": True},
        },
    ]


def in_search_space(spec: dict, value: Any) -> bool:
    """Whether one searched key's `spec` can produce `value`."""
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        return any(value == option and type(value) is type(option) for option in args) or (
            isinstance(value, float) and any(value == option for option in args if isinstance(option, (int, float)))
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "randint":
        return isinstance(value, int) and args[0] <= value < args[1]
    return args[0] <= value <= args[1]


def flatten_point(point: Any, where: str) -> dict[str, Any]:
    """{"model": {"dropout": 0.1}} -> {"model.dropout": 0.1}: one start point's values by dotted key."""
    if not isinstance(point, dict):
        raise UserError(f"config: {where} must be a mapping of sections to values, got {point!r}")
    flat: dict[str, Any] = {}
    for section, values in point.items():
        if not isinstance(values, dict):
            raise UserError(f"config: {where}.{section} must be a mapping of keys to values, got {values!r}")
        flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def resolve_start_points(
    space: dict[str, dict], points: list[dict] | None, current: Callable[[str], Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The start points as complete trial settings over the flattened `space` (every searched key,
    those a point leaves out from `current(key)`, the config's value), duplicates dropped; and
    notes to log. `points` None means the built-in ones, which are fitted to the space: a key it
    does not search is left out of them, and a point the space cannot hold is skipped (noted).
    Explicit points must fit: a UserError names what does not."""
    explicit = points is not None
    resolved: list[dict[str, Any]] = []
    notes: list[str] = []
    for number, point in enumerate(points if explicit else _default_start_points(), start=1):
        where = f"tune.start_points[{number - 1}]"
        values = flatten_point(point, where)
        unsearched = sorted(set(values) - set(space))
        if unsearched and explicit:
            raise UserError(f"config: {where} sets {', '.join(unsearched)}, which tune.search_space does not search")
        if unsearched:
            notes.append(f"built-in start point {number}: {', '.join(unsearched)} not searched, so left out of it")
        trial = {key: values.get(key, current(key)) for key in space}
        outside = [key for key, value in trial.items() if not in_search_space(space[key], value)]
        if outside:
            key = outside[0]
            source = "its value" if key in values else "the config's value"
            message = f"{where}: {key} = {trial[key]!r} ({source}) is outside its search space {space[key]}"
            if explicit:
                raise UserError(f"config: {message}; name a value inside it in the point")
            notes.append(f"built-in start point {number} skipped: {key} = {trial[key]!r} is outside {space[key]}")
            continue
        if trial not in resolved:
            resolved.append(trial)
    return resolved, notes


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
