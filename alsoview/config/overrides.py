"""The override engine: YAML files plus `section.key=value` overrides, typed into a `Config`.

Every run is a YAML file (configs/), optionally refined by more files (overlays, applied in
order), plus command-line overrides, in the torchtune style. A typo in a key or a value of the
wrong type is a user mistake: it ends the run with one clear line (UserError), never a traceback
deep inside Ray; so does a key of an earlier version, naming where it went. The engine is generic
over the schema's dataclasses: a mapping field whose metadata has a `merge` function (the search
space) refines its default with it; a model part's field takes `true`, `false`, `null` or its
settings (`config.keys`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from alsoview.config.keys import is_switch, optional_part
from alsoview.config.schema import Config
from alsoview.config.search_space import flatten_search_space, is_search_spec
from alsoview.errors import UserError

Paths = Union[str, Path, typing.Sequence[Union[str, Path]], None]


def load_config(paths: Paths = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read YAML configs (none: the built-in defaults; several: each refines the ones before it,
    key by key), apply `key=value` overrides, validate."""
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    raw: dict[str, Any] = {}
    for path in paths:
        raw = _merge_files(raw, _read_yaml(Path(path)))
    for item in overrides:
        key, value = _split_override(item)
        _set_dotted(raw, key, value)
    config = _build(Config, raw, prefix="")
    config.validate()
    return config


MAX_CONFIG_DEPTH = 32  # a config is a few sections deep; more is a mistake or a recursive alias
MAX_CONFIG_NODES = 100_000  # YAML aliases can expand a small file into a huge tree ("billion laughs")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    _check_tree(data, path)
    return data


def _check_tree(data: Any, where: object) -> None:
    """Refuse a YAML tree that nests deeper than MAX_CONFIG_DEPTH (a recursive alias nests for
    ever) or holds more than MAX_CONFIG_NODES values once its aliases are expanded, before
    anything walks it recursively."""
    stack, nodes = [(data, 1)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_CONFIG_DEPTH:
            raise UserError(f"{where}: nests deeper than {MAX_CONFIG_DEPTH} levels (a YAML alias inside itself?)")
        if nodes > MAX_CONFIG_NODES:
            raise UserError(f"{where}: holds more than {MAX_CONFIG_NODES:,} values once its YAML aliases are expanded")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)


def _split_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise UserError(f"override {item!r} is not of the form section.key=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    _check_tree(value, f"override {item!r}")
    return key.strip(), value


def _merge_files(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A config file refined by the next one: mappings key by key, anything else replaced (a
    part's `true` by its settings and back); the search spaces by dotted key."""
    spaces = [(raw.get("tune") or {}).get("search_space") if isinstance(raw.get("tune"), dict) else None
              for raw in (base, update)]  # fmt: skip
    merged = _deep_merge(base, update)
    if all(isinstance(space, dict) for space in spaces):
        earlier, later = (flatten_search_space(space, keep_removals=True) for space in spaces)
        merged["tune"]["search_space"] = {**earlier, **later}
    return merged


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in raw YAML; a model part written `true`, `false` or null becomes a mapping
    of its settings when a key under it is set (setting one turns the part on)."""
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if is_search_spec(child):  # a searched key (a part's switch): what lies under it is its own key
            node[".".join(parts[depth:])] = value
            return
        if child is None or isinstance(child, bool):
            child = node[part] = {}
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
    moved = getattr(cls, "moved_keys", {})
    for key in raw:
        if key in moved:
            raise UserError(f"config: {prefix}{key} is {moved[key]} now")
        if key not in known:
            hint = difflib.get_close_matches(str(key), sorted(known), n=1)
            suggestion = f"; did you mean {prefix}{hint[0]}?" if hint else f"; known keys: {', '.join(sorted(known))}"
            raise UserError(f"config: unknown key {prefix}{key}{suggestion}")
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in known & raw.keys():
        value, merge = raw[name], fields[name].metadata.get("merge")
        if merge is not None and isinstance(value, dict):
            value = merge(fields[name].default_factory(), value)  # a mapping refines its default
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _deep_merge(base: dict, update: dict) -> dict:
    """`base` refined by `update`: mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
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
    part = optional_part(hint)
    if part is not None and isinstance(value, bool):  # a model part: true (its defaults) or false (off)
        return part() if value else None
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
    """A copy of `config` with dotted keys set (a tuning trial's parameters), validated. A part's
    switch goes first: off, its settings in `values` are not used; on, it keeps its settings."""
    raw = config.to_dict()
    off = [key for key, value in values.items() if not value and is_switch(Config, key)]
    for key in sorted(values, key=lambda k: k.count(".")):
        value = values[key]
        if any(key.startswith(switch + ".") for switch in off):
            continue
        if value is True and is_switch(Config, key) and config.current(key):
            continue  # on already, with the settings it has
        _set_dotted(raw, key, value)
    result = _build(Config, raw, prefix="")
    result.validate()
    return result


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config, so a run directory says exactly what ran."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
