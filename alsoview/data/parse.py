"""Blocks of raw records -> typed Arrow rows (with drop reasons): the parsing that Ray Data runs in
parallel (`prepare.py`), pure functions around `amazon.py`'s record parsers, no Ray.
"""

from __future__ import annotations

import pyarrow as pa

from alsoview.data import amazon

# The columns parsed reviews and meta rows share, between each kind's own leading columns and
# any trailing ones: the item fields, the drop reason, and where the record came from.
_SHARED_COLUMNS = [
    ("brand", pa.string()),
    ("price", pa.float64()),
    ("price_status", pa.string()),
    ("description", pa.string()),
    ("also_view", pa.list_(pa.string())),
    ("drop_reason", pa.string()),
    ("detail", pa.string()),
    ("source", pa.int32()),
    ("line", pa.int64()),
]


def parsed_schema(leading: list[tuple[str, pa.DataType]], trailing: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """The schema of parsed rows: a record kind's own leading columns, the shared ones, then `trailing`."""
    return pa.schema([*leading, *_SHARED_COLUMNS, *trailing])


REVIEW_SCHEMA = parsed_schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        ("rating", pa.float64()),
        ("time", pa.int64()),
        ("label", pa.int8()),
    ],
    [("format", pa.string())],
)
META_SCHEMA = parsed_schema([("asin", pa.string()), ("title", pa.string())], [("also_buy", pa.list_(pa.string()))])


def parse_review_block(block: pa.Table) -> pa.Table:
    """Ray Data UDF: raw review records -> typed rows (with drop reasons)."""
    lines = block.column("line").to_pylist()
    columns = amazon.parse_review_records(block.column("format").to_pylist(), block.column("text").to_pylist(), lines)
    columns["source"] = block.column("source")
    columns["line"] = block.column("line")
    columns["format"] = block.column("format")
    return pa.table(columns, schema=REVIEW_SCHEMA)


def parse_meta_block(block: pa.Table) -> pa.Table:
    """Ray Data UDF: raw meta lines -> typed rows (with drop reasons)."""
    columns = amazon.parse_meta_records(block.column("text").to_pylist())
    columns["source"] = block.column("source")
    columns["line"] = block.column("line")
    return pa.table(columns, schema=META_SCHEMA)
