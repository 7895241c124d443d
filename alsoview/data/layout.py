"""The prepared-dataset contract: its file names, its manifest, and the format version check.

`prepare` (Ray glue) writes this layout and `catalog` (core) reads it; both import this small,
dependency-free module, so reading a dataset never imports the prepare pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alsoview.errors import UserError

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: items.parquet has also_buy
INTERACTIONS = "interactions.parquet"
ITEMS = "items.parquet"
USERS = "users.parquet"
BRANDS = "brands.parquet"
LOGGED_NEGATIVES = "logged_negatives.parquet"
FILES = (MANIFEST, INTERACTIONS, ITEMS, USERS, BRANDS, LOGGED_NEGATIVES)  # the whole prepared dataset


def read_manifest(prepared_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared dataset; one clear error when the directory is not one, or is
    of another format version."""
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"not a prepared dataset (no {MANIFEST}): {prepared_dir}; run `alsoview prepare` first")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable manifest ({exc}); prepare the dataset again") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(
            f"{path}: prepared-dataset format {version!r}, this alsoview reads {FORMAT_VERSION}; "
            f"prepare the dataset again"
        )
    return manifest
