"""Writing a prepared dataset: the Parquet files (`layout.py` names them) and `manifest.json`, whose
row accounting is checked before it is written (nothing is silently lost). Pure, no Ray.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from alsoview.data import layout
from alsoview.data.clean import CleanDataset, DropLog
from alsoview.data.inputs import InputFile, file_sha256
from alsoview.version import __version__


def write_dataset(data: CleanDataset, text_vectors: np.ndarray, out: Path) -> None:
    data.interactions.to_parquet(out / layout.INTERACTIONS, index=False)
    data.users.to_parquet(out / layout.USERS, index=False)
    data.brands.to_parquet(out / layout.BRANDS, index=False)
    data.logged_negatives.to_parquet(out / layout.LOGGED_NEGATIVES, index=False)
    pq.write_table(_items_table(data.items, text_vectors), out / layout.ITEMS)


def _items_table(items: pd.DataFrame, text_vectors: np.ndarray) -> pa.Table:
    dim = text_vectors.shape[1]
    columns = [
        "item_idx",
        "asin",
        "title",
        "brand",
        "brand_idx",
        "price",
        "price_missing",
        "price_norm",
        "price_status",
        "description",
        "has_meta",
    ]
    table = pa.Table.from_pandas(items[columns], preserve_index=False)
    also_view = pa.array([list(v) for v in items["also_view"]], pa.list_(pa.int32()))
    also_buy = pa.array([list(v) for v in items["also_buy"]], pa.list_(pa.int32()))
    flat = pa.array(text_vectors.reshape(-1).astype(np.float32))
    vectors = pa.FixedSizeListArray.from_arrays(flat, dim) if dim else pa.nulls(len(items), pa.list_(pa.float32()))
    table = table.append_column("also_view", also_view).append_column("also_buy", also_buy)
    return table.append_column("text_vector", vectors)


def build_manifest(
    files: list[InputFile],
    data: CleanDataset,
    text_info: dict[str, Any],
    config: dict[str, Any],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """manifest.json's contents; `config` is the whole config it was prepared with, as a dict."""
    reviews_read = sum(f.rows_read for f in files if f.role == "reviews")
    meta_read = sum(f.rows_read for f in files if f.role == "meta")
    reviews_kept = data.counts["interactions"] + data.counts["logged_negatives"]
    meta_kept = int(data.items["has_meta"].sum())
    _check_accounting("reviews", reviews_read, reviews_kept, data.review_drops)
    _check_accounting("meta", meta_read, meta_kept, data.meta_drops)
    return {
        "format_version": layout.FORMAT_VERSION,
        "alsoview_version": __version__,
        "inputs": {role: [_input_entry(f) for f in files if f.role == role] for role in ("reviews", "meta")},
        "rows": {
            "reviews": {"read": reviews_read, "kept": reviews_kept, "dropped": data.review_drops.total},
            "meta": {"read": meta_read, "kept": meta_kept, "dropped": data.meta_drops.total},
        },
        "counts": data.counts,
        "dropped": {
            "reviews": dict(sorted(data.review_drops.counts.items())),
            "meta": dict(sorted(data.meta_drops.counts.items())),
        },
        "drop_examples": {"reviews": data.review_drops.examples, "meta": data.meta_drops.examples},
        "stats": data.stats,
        "text_encoder": {k: v for k, v in text_info.items() if k not in ("seconds", "items_per_second")},
        "config": config,
        "timing_seconds": {
            **seconds,
            "text_embedding": text_info["seconds"],
            "text_items_per_second": text_info["items_per_second"],
        },
    }


def _input_entry(file: InputFile) -> dict[str, Any]:
    entry = {"path": file.path, "sha256": file_sha256(file.path), "format": file.format, "rows_read": file.rows_read}
    if file.header_lines:
        entry["header_lines"] = file.header_lines
    if file.invalid_utf8_lines:
        entry["invalid_utf8_lines"] = file.invalid_utf8_lines
    return entry


def _check_accounting(role: str, read: int, kept: int, drops: DropLog) -> None:
    """The manifest's promise, checked before it is written: nothing is silently lost."""
    if read != kept + drops.total:
        raise AssertionError(f"{role}: {read} rows read but {kept} kept + {drops.total} dropped")


def write_manifest(manifest: dict[str, Any], out: Path) -> None:
    (out / layout.MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
