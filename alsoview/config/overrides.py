"""The override engine: a YAML file plus `section.key=value` overrides, typed into a `Config`.

Every run is a YAML file (configs/) plus command-line overrides, in the torchtune style. A
typo in a key or a value of the wrong type is a user mistake: it ends the run with one clear
line (UserError), never a traceback deep inside Ray. The engine is generic over the schema's
dataclasses; the one place it knows the search space is `_build`'s merge of a mapping field
into its default (a `{kind: arguments}` spec is one value: search_space.is_search_spec).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from alsoview.config.schema import Config
from alsoview.config.search_space import is_search_spec
from alsoview.errors import UserError


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config (or the built-in defaults), apply `key=value` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        key, value = _split_override(item)
        _set_dotted(raw, key, value)
    config = _build(Config, raw, prefix="")
    config.validate()
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def _split_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise UserError(f"override {item!r} is not of the form section.key=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Turn a nested dict into the dataclass `cls`, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise UserError(f"config: {where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            hint = difflib.get_close_matches(str(key), sorted(known), n=1)
            suggestion = f"; did you mean {prefix}{hint[0]}?" if hint else f"; known keys: {', '.join(sorted(known))}"
            raise UserError(f"config: unknown key {prefix}{key}{suggestion}")
    kwargs = {}
    defaults = {
        f.name: f.default_factory for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING
    }
    for name in known & raw.keys():
        value = raw[name]
        if hints[name] is dict and isinstance(value, dict) and name in defaults:
            # A YAML mapping refines the default, key by key; a search spec is one value, replaced whole.
            value = _deep_merge(defaults[name](), value, is_value=is_search_spec)
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _deep_merge(base: dict, update: dict, is_value: Callable[[Any], bool]) -> dict:
    """`base` refined by `update`, key by key; a mapping `is_value` accepts replaces instead of merging."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not is_value(value):
            merged[key] = _deep_merge(merged[key], value, is_value)
        else:
            merged[key] = value
    return merged


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(v) for v in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against a type hint, with the few conversions YAML users expect."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".")
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for arg in options:
            try:
                return _coerce(arg, value, key)
            except UserError:
                continue
        if len(options) == 1:
            return _coerce(options[0], value, key)  # raises with that type's message
        expected = " or ".join(_describe(a) for a in options)
        raise UserError(f"config: {key} must be {expected}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise UserError(f"config: {key} must be one of {typing.get_args(hint)}, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(hint)
        items = value if isinstance(value, list) else [value]
        return [_coerce(item_type, v, key) for v in items]
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config: {key} must be a list, got {value!r}")
        return tuple(_coerce(item_type, v, key) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e9 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise UserError(f"config: {key} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A Config from its `to_dict()` form (a run's saved config), validated."""
    config = _build(Config, raw, prefix="")
    config.validate()
    return config


def with_overrides(config: Config, values: dict[str, Any]) -> Config:
    """A copy of `config` with dotted keys set (a tuning trial's parameters), validated."""
    raw = config.to_dict()
    for key, value in values.items():
        _set_dotted(raw, key, value)
    result = _build(Config, raw, prefix="")
    result.validate()
    return result


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config, so a run directory says exactly what ran."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
