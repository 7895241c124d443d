"""The tuning search space's grammar (`tune.search_space`): config keys -> `{kind: arguments}`.

Kinds: uniform [lo, hi], loguniform [lo, hi], choice [values...], randint [lo, hi). Keys may be
nested sections or dotted at any level (`model: {heads.cooccurrence.recency: {...}}`); the space
is kept flat, by dotted key, so a YAML file refines the built-in space key by key and a key set to
null is left out of it. A model part is searched by its switch (`model.heads.dot: {choice:
[false, true]}`) and its settings by their own keys; a setting of a part that is off and whose
switch is not searched is left out, with a note. This module knows the grammar; which keys exist
is the schema's (`config.keys` against the `Config` class handed in), so schema.py can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alsoview.config.keys import is_key, is_section, is_switch, switches_above
from alsoview.errors import UserError, check_setting

SEARCH_KINDS = ("uniform", "loguniform", "choice", "randint")
# Keys the resource plan of a search depends on: it is made once, before the first trial.
_PLANNED = "the search's resource plan (trials at once, each one's CPUs) is made once from it"
UNSEARCHABLE = {
    key: _PLANNED for key in ("train.num_workers", "train.use_gpu", "train.cpus_per_worker", "sampling.cpus_per_task")
}


def _default_search_space() -> dict[str, Any]:
    return {
        "sampling.also_view_fraction": {"uniform": [0.0, 1.0]},
        "sampling.negatives_per_positive": {"choice": [1, 2, 4, 8]},
        "train.learning_rate": {"loguniform": [0.001, 0.03]},
        "model.embedding_dim": {"choice": [16, 32, 64]},
        "model.user.history": {"choice": [False, True]},
        "model.heads.mlp.dropout": {"uniform": [0.0, 0.6]},
        "model.heads.mlp.product_interaction": {"choice": [False, True]},
        "model.heads.dot": {"choice": [False, True]},
        "model.heads.also_view": {"choice": [False, True]},
    }


def _default_start_points() -> list[dict[str, Any]]:
    """The first trials of a search (`tune.start_points` unset), each completed from the config
    for the searched keys it does not name: the config as it is (for the built-in defaults, the
    original design), then the kind of settings that won on real review data
    (configs/video_games.yaml), expressed in the default space: the users' items, a dot product,
    also-view as a relation, 8 negatives, lr 0.001. TPE explores from there."""
    return [
        {},
        {
            "sampling": {"also_view_fraction": 0.0, "negatives_per_positive": 8},
            "train": {"learning_rate": 0.001},
            "model": {"user": {"history": True}, "heads": {"dot": True, "also_view": True}},
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


def flatten_point(point: Any, where: str, switches: set[str]) -> dict[str, Any]:
    """{"model": {"heads": {"dot": {"item_features": False}}}} -> one start point's values by
    dotted key; a mapping given for a searched part switch (in `switches`) also sets it on."""
    if not isinstance(point, dict):
        raise UserError(f"config: {where} must be a mapping of sections to values, got {point!r}")
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if isinstance(value, dict):
                if key in switches:
                    flat[key] = True
                walk(value, key + ".")
            elif not prefix:
                raise UserError(f"config: {where}.{key} must be a mapping of keys to values, got {value!r}")
            else:
                flat[key] = value

    walk(point, "")
    return flat


def resolve_start_points(
    space: dict[str, dict], points: list[dict] | None, current: Callable[[str], Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The start points as complete trial settings over the flat `space` (every searched key,
    those a point leaves out from `current(key)`, the config's value), duplicates dropped; and
    notes to log. `points` None means the built-in ones, which are fitted to the space: a key it
    does not search is left out of them, and a point the space cannot hold is skipped (noted).
    Explicit points must fit: a UserError names what does not."""
    explicit = points is not None
    resolved: list[dict[str, Any]] = []
    notes: list[str] = []
    for number, point in enumerate(points if explicit else _default_start_points(), start=1):
        where = f"tune.start_points[{number - 1}]"
        values = flatten_point(point, where, set(space))
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
    """Whether `value` is one key's search, `{kind: arguments}`: a leaf of the space, not a section."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SEARCH_KINDS


def flatten_search_space(space: dict, prefix: str = "", keep_removals: bool = False) -> dict[str, Any]:
    """A space written with nested sections and dotted keys, by dotted key; a key set to null is
    left out (or, with `keep_removals`, kept as None: it removes the key from the space it refines)."""
    if not isinstance(space, dict):
        raise UserError(f"config: tune.search_space must be a mapping, got {space!r}")
    flat: dict[str, Any] = {}
    for key, value in space.items():
        dotted = f"{prefix}{key}"
        if value is None:
            if keep_removals:
                flat[dotted] = None
        elif is_search_spec(value):
            flat[dotted] = value
        elif isinstance(value, dict):
            flat.update(flatten_search_space(value, dotted + ".", keep_removals))
        else:
            raise UserError(
                f"config: tune.search_space.{dotted} must be {{kind: arguments}} with kind one of "
                f"{SEARCH_KINDS}, got {value!r}"
            )
    return flat


def refine_search_space(base: dict, update: dict) -> dict[str, Any]:
    """`base` refined by `update` key by key, both flattened; a key `update` sets to null stays as
    None, so the space a saved config reads back is the one it ran (`flatten_search_space` drops it)."""
    return {**flatten_search_space(base, keep_removals=True), **flatten_search_space(update, keep_removals=True)}


def effective_search_space(
    space: dict[str, dict], config_cls: type, current: Callable[[str], Any]
) -> tuple[dict[str, dict], list[str]]:
    """The keys a search varies: `space` without the settings of parts that are off in the config
    and whose switch is not searched (a trial could never use them), and a note for each left out."""
    kept: dict[str, dict] = {}
    notes: list[str] = []
    for key, spec in space.items():
        off = [s for s in switches_above(config_cls, key) if s not in space and not current(s)]
        if off:
            notes.append(f"tune.search_space: {key} left out: {off[0]} is off (search {off[0]} too to try it)")
        else:
            kept[key] = spec
    return kept, notes


def check_search_spec(key: str, spec: dict, config_cls: type, moved: Callable[[str], str | None]) -> None:
    """One flattened entry checked: it names a searchable key of `config_cls` (the `Config`), with
    valid arguments; `moved(key)` names where an old key went."""
    where = f"tune.search_space.{key}"
    if not is_key(config_cls, key) or is_section(config_cls, key):
        new = moved(key)
        raise UserError(f"config: {where} names no config key" + (f"; it is {new} now" if new else ""))
    if key in UNSEARCHABLE:
        raise UserError(f"config: {where} cannot be searched: {UNSEARCHABLE[key]}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        check_setting(isinstance(args, list) and len(args) >= 1, where, "a non-empty list for choice", args)
        if is_switch(config_cls, key):
            ok = all(isinstance(a, bool) for a in args)
            check_setting(ok, where, "a choice of true and false (a model part is on or off)", args)
    else:
        check_setting(not is_switch(config_cls, key), where, "a choice of true and false (a model part)", spec)
        ok = isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)
        check_setting(ok and args[0] < args[1], where, f"[low, high] with low < high for {kind}", args)
        if kind == "loguniform":
            check_setting(args[0] > 0, where, "positive bounds for loguniform", args)
