"""The raw input files: resolving and checking them, reading their records, and telling whether a
prepared dataset is stale (its settings or its input files' contents differ). Pure, no Ray.

The driver streams raw lines (it must, to know line numbers, and gzip is not seekable) and cuts
them into Arrow blocks of records (`record_tables`), the unit the parsers work on in parallel.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import pyarrow as pa

from alsoview.data import formats, layout
from alsoview.errors import UserError
from alsoview.logs import Progress

log = logging.getLogger("alsoview")

_SNIFF_LINES = 5


@dataclass
class InputFile:
    """One raw file and what was read from it."""

    path: str
    role: str  # "reviews" | "meta"
    format: str
    source: int  # index across all input files: orders rows for tie-breaks
    rows_read: int = 0
    header_lines: int = 0
    invalid_utf8_lines: int = 0


# ---------------------------------------------------------------- resolving and checking


def resolve_inputs(patterns: list[str], role: str, first_source: int = 0) -> list[InputFile]:
    """Expand globs, check each file is there, readable, non-empty and of the right kind."""
    if not patterns:
        raise UserError(f"no {role} files given")
    files: list[InputFile] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UserError(f"{role}: no file matches {pattern!r}")
        for path in matches:
            fmt = _check_file(Path(path), role)
            files.append(InputFile(path=str(path), role=role, format=fmt, source=first_source + len(files)))
    return files


def _check_file(path: Path, role: str) -> str:
    if not path.exists():
        raise UserError(f"{role} file not found: {path}")
    if not path.is_file():
        raise UserError(f"{role} path is not a file: {path}")
    lines = _head_lines(path)
    if not any(line.strip() for line in lines):
        raise UserError(f"{role} file is empty: {path}")
    try:
        if role == "reviews":
            return formats.sniff_review_format(path.name, lines)
        return formats.sniff_meta_format(lines)
    except ValueError as exc:
        raise UserError(f"{path}: wrong format for {role}: {exc}") from None


def _open_binary(path: Path) -> BinaryIO:
    """Gzip by content (magic bytes), not by name: users rename files."""
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _head_lines(path: Path) -> list[str]:
    lines: list[str] = []
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(formats.bounded_lines(handle), start=1):
                if isinstance(raw, int) and any(line.strip() for line in lines):
                    continue  # read past here; the reading counts it (line_too_long)
                if isinstance(raw, int):
                    raise UserError(
                        f"{path}:{number}: a line of {raw:,} bytes, over the {formats.MAX_LINE_BYTES:,} a record "
                        "may have, before the file's format could be told"
                    )
                lines.append(raw.decode("utf-8", errors="replace"))
                if sum(1 for line in lines if line.strip()) >= _SNIFF_LINES:
                    break
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return lines


# ---------------------------------------------------------------- reading records


def _records(file: InputFile) -> Iterator[tuple[int, str]]:
    """(line number, record text) for every record of a file; CSV records as JSON field lists."""
    path = Path(file.path)
    try:
        with _open_binary(path) as handle:
            if file.format.endswith("_csv"):
                yield from _csv_records(file, handle)
            else:
                for number, raw in enumerate(formats.bounded_lines(handle), start=1):
                    yield number, formats.too_long_marker(raw) if isinstance(raw, int) else _decode(file, raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {path} (after {file.rows_read} records): {exc}") from None
    except csv.Error as exc:  # a CSV field beyond csv's own size limit, say
        raise UserError(f"{path}: not readable as CSV after {file.rows_read} records ({exc})") from None


def _decode(file: InputFile, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        file.invalid_utf8_lines += 1  # reported in the manifest; the line is still parsed
        return raw.decode("utf-8", errors="replace")


def _csv_records(file: InputFile, handle: BinaryIO) -> Iterator[tuple[int, str]]:
    text = io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")
    records = formats.split_csv_records(text)
    if file.format == "combined_csv":
        _, header = next(records)
        file.header_lines = 1
        order = formats.combined_header_index(header)
        for line, fields in records:
            picked = [fields[i] for i in order] if len(fields) == len(header) else fields
            yield line, json.dumps(picked)
    else:
        for line, fields in records:
            yield line, json.dumps(fields)


def record_tables(files: list[InputFile], chunk_lines: int) -> Iterator[pa.Table]:
    """Raw records as Arrow blocks of (source, line, format, text): the unit of parallel parsing,
    yielded as each is read, so a reader holds only the blocks it has not handed on."""
    for file in files:
        lines: list[int] = []
        texts: list[str] = []
        progress = Progress(f"reading {Path(file.path).name}", None, "records")
        for number, text in _records(file):
            lines.append(number)
            texts.append(text)
            file.rows_read += 1
            if len(texts) == chunk_lines:
                yield _block(file, lines, texts)
                progress.advance(len(texts))
                lines, texts = [], []
        if texts:
            yield _block(file, lines, texts)
        log.info("read %s: %d records (%s)", file.path, file.rows_read, file.format)


def _block(file: InputFile, lines: list[int], texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "source": pa.array(np.full(n, file.source, np.int32)),
            "line": pa.array(np.asarray(lines, np.int64)),
            "format": pa.array([file.format] * n, pa.string()),
            "text": pa.array(texts, pa.string()),
        }
    )


# ---------------------------------------------------------------- staleness


def why_stale(manifest: dict[str, Any], settings: dict[str, dict[str, Any]]) -> str | None:
    """Why a prepared dataset does not match the `settings` it would be prepared with now (the
    config's data and text sections: `Config.dataset_settings`; None when it does): other
    settings, or input files of other contents. Where the inputs lie does not matter."""
    if manifest.get("format_version") != layout.FORMAT_VERSION:
        version = manifest.get("format_version")
        return f"prepared-dataset format {version!r}, this alsoview writes {layout.FORMAT_VERSION}"
    saved = manifest.get("config", {})
    located = ("reviews", "meta")  # paths: compared by the contents of the files below
    current = {k: {n: v for n, v in section.items() if n not in located} for k, section in settings.items()}
    recorded = {k: {n: v for n, v in (saved.get(k) or {}).items() if n not in located} for k in current}
    if recorded != current:
        changed = sorted(
            f"{k}.{n}" for k in current for n in current[k] if recorded[k].get(n, object()) != current[k][n]
        )
        return f"other settings: {', '.join(changed) or 'its config is incomplete'}"
    inputs = manifest.get("inputs", {})
    for role in located:
        patterns = settings["data"][role]
        had = [entry.get("sha256") for entry in inputs.get(role, [])]
        files = resolve_inputs(patterns, role) if patterns else []
        if len(had) != len(files):
            return f"{len(files)} {role} files given, {len(had)} prepared"
        for entry_hash, file in zip(had, files):
            if entry_hash is None:
                return "made before input files were fingerprinted"
            if entry_hash != file_sha256(file.path):
                return f"{file.path} has other contents"
    return None


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()
