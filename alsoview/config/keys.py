"""Dotted config keys (`model.heads.cooccurrence.recency`) resolved against the schema's classes.

A key walks the dataclasses of the config; a model part (`model.part.Part`) that is off holds
None, and its key is a switch: `model.heads.dot` is true when the part is on. What the search
space, its start points and the overrides of a trial need: which keys exist, which are switches,
and what value a key has in a config (a setting of a part that is off: the part's default).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from alsoview.model.part import Part

_MISSING = object()


def optional_part(hint: Any) -> type[Part] | None:
    """The Part class of a `PartConfig | None` hint (a part's switch), else None."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1 and isinstance(options[0], type) and issubclass(options[0], Part):
            return options[0]
    return None


def _dataclass_of(hint: Any) -> type | None:
    part = optional_part(hint)
    if part is not None:
        return part
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def key_hint(root: type, key: str) -> Any:
    """The type hint of `key` under the dataclass `root`, or _MISSING when no such key exists."""
    hint: Any = root
    for name in key.split("."):
        cls = _dataclass_of(hint)
        if cls is None:
            return _MISSING
        hints = typing.get_type_hints(cls)
        if name not in {f.name for f in dataclasses.fields(cls)}:
            return _MISSING
        hint = hints[name]
    return hint


def is_key(root: type, key: str) -> bool:
    return key_hint(root, key) is not _MISSING


def is_switch(root: type, key: str) -> bool:
    """Whether `key` turns a model part on or off."""
    hint = key_hint(root, key)
    return hint is not _MISSING and optional_part(hint) is not None


def is_section(root: type, key: str) -> bool:
    """Whether `key` names a section of keys (a dataclass that is not a part), not a value."""
    hint = key_hint(root, key)
    return hint is not _MISSING and optional_part(hint) is None and _dataclass_of(hint) is not None


def current_value(config: Any, key: str) -> Any:
    """The value of `key` in `config`; a switch reads true or false; a setting of a part that is
    off reads as the part's default (what it would be when a trial turns the part on)."""
    value: Any = config
    hint: Any = type(config)
    for name in key.split("."):
        cls = _dataclass_of(hint)
        hint = typing.get_type_hints(cls)[name]
        value = getattr(value if value is not None else cls(), name)
    return (value is not None) if optional_part(hint) is not None else value


def switches_above(root: type, key: str) -> list[str]:
    """The part switches `key` lies under (`model.heads.cooccurrence` for its `.recency`)."""
    parts = key.split(".")
    prefixes = (".".join(parts[:i]) for i in range(1, len(parts)))
    return [prefix for prefix in prefixes if is_switch(root, prefix)]
