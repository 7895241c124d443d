"""Which raw format a file holds, judged from its name and first lines, and how CSV records are
split (quoted fields may span lines). Pure functions, no Ray; the format names are those
`amazon.py` parses.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

from alsoview.data.fields import python_literal

# A line longer than this is not read as a record (JSON parsing costs several times a line's size,
# and no Amazon record comes near it): the reader passes a marker with its length in its place,
# never the line, and the parser counts it as `line_too_long` with its file:line.
MAX_LINE_BYTES = 8 * 2**20
_TOO_LONG = "\x00alsoview: line too long:"


def too_long_marker(length: int) -> str:
    """What the reader passes on in place of a line of `length` bytes over MAX_LINE_BYTES."""
    return f"{_TOO_LONG}{length}"


def too_long_length(text: str) -> int | None:
    """The length of the line a marker stands for; None for any other text."""
    return int(text[len(_TOO_LONG) :]) if text.startswith(_TOO_LONG) else None


def bounded_lines(handle: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[bytes | int]:
    """Each line of a binary stream, or for a line over `limit` bytes its length: the rest of it
    is read past in pieces, never held whole."""
    while line := handle.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        length = len(line)
        while (piece := handle.readline(2**20)) and not piece.endswith(b"\n"):
            length += len(piece)
        yield length + len(piece)


REVIEW_FORMATS = ("reviews_json", "ratings_csv", "combined_csv")
META_FORMATS = ("meta_json",)  # meta_json lines may be 2018 JSON or 2014 Python literals

COMBINED_COLUMNS = ("reviewerID", "asin", "brand", "price", "description", "also_view", "label")


def _literal_or_none(text: str) -> Any:
    """A line read as a 2014 Python-literal object, or None (`amazon.py`'s meta parser uses it too)."""
    stripped = text.strip()
    return python_literal(stripped) if stripped.startswith("{") else None


def split_csv_records(lines: Iterable[str]) -> Iterable[tuple[int, list[str]]]:
    """CSV records with the line number each starts on (quoted fields may span lines)."""
    reader = csv.reader(lines)
    start = 1
    for fields in reader:
        yield start, fields
        start = reader.line_num + 1


def sniff_review_format(path_name: str, first_lines: Sequence[str]) -> str:
    """Which review format a file holds, judged from its name and first non-empty lines.

    Raises ValueError with a user-facing reason when the file is not review data (for example
    an item metadata file given as reviews).
    """
    sample = [line for line in first_lines if line.strip()]
    if not sample:
        raise ValueError("no data lines")
    first = sample[0].lstrip("\ufeff").strip()
    if first.startswith("{"):
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            if _literal_or_none(first) is not None:
                raise ValueError("looks like 2014 item metadata (Python-literal lines), not reviews") from None
            raise ValueError("first line is neither JSON nor CSV") from None
        if isinstance(record, dict) and "reviewerID" in record:
            return "reviews_json"
        if isinstance(record, dict) and ({"also_view", "title", "related", "description"} & record.keys()):
            raise ValueError("looks like item metadata (has title/also_view, no reviewerID), not reviews")
        raise ValueError("JSON lines without reviewerID/asin: not Amazon review data")
    try:
        fields = next(csv.reader(io.StringIO(first)))
    except csv.Error as exc:  # its advice after " - " is about opening files, not the user's data
        raise ValueError(f"first line is neither JSON nor CSV ({str(exc).split(' - ')[0]})") from None
    header = [f.strip() for f in fields]
    if "label" in header and "reviewerID" in header:
        missing = [c for c in COMBINED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"combined samples CSV lacks columns {missing}")
        return "combined_csv"
    if len(fields) == 4:
        try:
            float(fields[2])
            float(fields[3])
        except ValueError:
            raise ValueError("4-column CSV whose rating/time columns are not numbers") from None
        return "ratings_csv"
    raise ValueError(f"not a known review format (first line: {first[:80]!r})")


def sniff_meta_format(first_lines: Sequence[str]) -> str:
    """Check that a file holds item metadata; raises ValueError with a reason otherwise."""
    sample = [line for line in first_lines if line.strip()]
    if not sample:
        raise ValueError("no data lines")
    first = sample[0].lstrip("\ufeff").strip()
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        record = _literal_or_none(first)
    if not isinstance(record, dict):
        raise ValueError(f"first line is not a JSON or Python-literal object: {first[:80]!r}")
    if "reviewerID" in record:
        raise ValueError("looks like reviews (has reviewerID), not item metadata")
    if "asin" not in record:
        raise ValueError("objects without an asin: not Amazon item metadata")
    return "meta_json"


def combined_header_index(header: Sequence[str]) -> list[int]:
    """Positions of COMBINED_COLUMNS in a combined_samples.csv header (extra columns allowed)."""
    names = [h.strip() for h in header]
    return [names.index(c) for c in COMBINED_COLUMNS]
