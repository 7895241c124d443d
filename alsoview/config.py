"""Typed configuration: YAML files plus `section.key=value` overrides, validated up front.

Every run is a YAML file (configs/) plus command-line overrides, in the torchtune style.
A typo in a key or an out-of-range value is a user mistake: it ends the run with one clear
line (UserError), never a traceback deep inside Ray.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from alsoview.errors import UserError


@dataclass
class DataConfig:
    """Where the raw data comes from, how it is cleaned, and where the prepared dataset goes."""

    # Raw review files (paths or globs): 2018 JSON lines (.json/.json.gz), ratings-only CSV, or
    # the original design's combined_samples.csv. Empty: the generated default dataset.
    reviews: list[str] = field(default_factory=list)
    # Raw item metadata files (paths or globs): 2018 JSON lines or 2014 Python-literal lines.
    meta: list[str] = field(default_factory=list)
    # The generated default dataset (used when `reviews` is empty); made on first use.
    generated_dir: str = "data/generated/default"
    generate_users: int = 2000
    generate_items: int = 600
    generate_seed: int = 0
    prepared_dir: str = "data/prepared/default"
    min_rating: Union[float, None] = None  # drop reviews rated below this (None: keep all)
    kcore: int = 0  # iteratively keep users and items with >= kcore interactions (0: off)
    strict: bool = False  # a malformed input line is fatal instead of counted and dropped
    error_examples: int = 5  # file:line examples kept per drop reason in the manifest
    read_chunk_lines: int = 20000  # raw lines per Ray Data block when parsing

    def validate(self) -> None:
        _check(self.generate_users >= 10, "data.generate_users", ">= 10", self.generate_users)
        _check(self.generate_items >= 20, "data.generate_items", ">= 20", self.generate_items)
        _check(self.kcore >= 0, "data.kcore", ">= 0", self.kcore)
        _check(self.error_examples >= 0, "data.error_examples", ">= 0", self.error_examples)
        _check(self.read_chunk_lines >= 100, "data.read_chunk_lines", ">= 100", self.read_chunk_lines)
        if self.min_rating is not None:
            _check(0 <= self.min_rating <= 5, "data.min_rating", "in [0, 5]", self.min_rating)
        if self.meta and not self.reviews:
            raise UserError("config: data.meta is set but data.reviews is empty; give the review files too")


@dataclass
class TextConfig:
    """How item descriptions become vectors: once per item, at prepare time."""

    encoder: str = "auto"  # auto | minilm | hashing ("auto" says in the log which one ran)
    model_path: Union[str, None] = None  # a local transformers model dir (default: the packaged MiniLM)
    dim: int = 384  # hashing encoder only; the transformer's size comes from the model
    max_length: int = 128
    batch_size: int = 64
    actors: int = 1  # embedding actors in the Ray Data actor pool (each loads the model once)

    def validate(self) -> None:
        encoders = ("auto", "minilm", "hashing")
        _check(self.encoder in encoders, "text.encoder", f"one of {encoders}", self.encoder)
        _check(self.dim >= 8, "text.dim", ">= 8", self.dim)
        _check(8 <= self.max_length <= 512, "text.max_length", "in [8, 512]", self.max_length)
        _check(self.batch_size >= 1, "text.batch_size", ">= 1", self.batch_size)
        _check(self.actors >= 1, "text.actors", ">= 1", self.actors)


@dataclass
class Config:
    """The whole run configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    seed: int = 0

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "validate"):
                value.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise UserError(f"config: {key} must be {expected} (got {got!r})")


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
    for name in known & raw.keys():
        kwargs[name] = _coerce(hints[name], raw[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against a type hint, with the few conversions YAML users expect."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".")
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0])
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
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise UserError(f"config: {key} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config, so a run directory says exactly what ran."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
