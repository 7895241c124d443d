"""The prepare pipeline: raw Amazon files -> prepared dataset directory (Parquet + manifest).

Ray glue around the pure parts: the driver streams raw lines (it must, to know line numbers
and gzip is not seekable; `inputs.py`), Ray Data parses the blocks in parallel (`parse.py`,
`amazon.py`), the driver runs the global cleaning (`clean.py`), Ray Data embeds each item's
text once with an actor pool (`embed.py`, `text.py`), and the dataset is written whole
(`write.py`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa

from alsoview import storage
from alsoview.config import Config, with_absolute_paths
from alsoview.data import amazon, layout
from alsoview.data.clean import CleanDataset, CleanOptions, clean
from alsoview.data.inputs import InputFile, record_tables, resolve_inputs, why_stale
from alsoview.data.parse import META_SCHEMA, REVIEW_SCHEMA, parse_meta_block, parse_review_block
from alsoview.data.write import build_manifest, write_dataset, write_manifest
from alsoview.distributed.embed import embed_items
from alsoview.distributed.runtime import init_ray
from alsoview.distributed.stall import stalled_line, watched
from alsoview.errors import UserError

log = logging.getLogger("alsoview")

PARSE_TASK_CPU = 1.0  # Ray Data's default for a task, said out loud: a stalled parse names it
# Blocks of raw lines parsed per Ray Data execution: the driver's raw text is a window's (32 x
# data.read_chunk_lines lines), whatever the files' size; a window is work for 32 parse tasks.
PARSE_WINDOW_BLOCKS = 32


# ---------------------------------------------------------------- the pipeline


@dataclass
class PrepareResult:
    out_dir: Path
    manifest: dict[str, Any]


def prepare(config: Config, out_dir: str | Path | None = None, dashboard: bool = False) -> PrepareResult:
    """Run the whole prepare pipeline on the configured raw files and publish the dataset whole.

    `out` must be empty, new, or a prepared dataset (which is replaced); that is checked, with
    the inputs, before any work. `dashboard`: a Ray Train run follows in this process, so a Ray
    this starts runs the dashboard it needs (runtime.init_ray), instead of starting twice.
    Two prepares into one `out` take turns (its lock); each clears what a killed one left there.
    """
    config = with_absolute_paths(config)
    out = Path(out_dir or config.data.prepared_dir).resolve()
    storage.check_replaceable(out, layout.MANIFEST, "prepared dataset")
    with storage.locked(out, "the prepared dataset"):
        storage.clear_leftovers(out)
        return _prepare_into(config, out, dashboard)


def _prepare_into(config: Config, out: Path, dashboard: bool) -> PrepareResult:
    """The pipeline into `out`, its lock held."""
    reviews = resolve_inputs(config.data.reviews, "reviews")
    meta = resolve_inputs(config.data.meta, "meta", first_source=len(reviews)) if config.data.meta else []
    log.info(init_ray(dashboard=dashboard))  # after the input checks: a typo in a path fails fast, without starting Ray
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    chunk, timeout = config.data.read_chunk_lines, config.train.stall_timeout
    review_rows = _parse_parallel(reviews, parse_review_block, REVIEW_SCHEMA, chunk, timeout, "reviews")
    meta_rows = _parse_parallel(meta, parse_meta_block, META_SCHEMA, chunk, timeout, "meta")
    seconds["read_and_parse"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    options = CleanOptions(config.data.min_rating, config.data.kcore, config.data.error_examples)
    data = clean(review_rows, meta_rows, options)
    seconds["clean"] = round(time.perf_counter() - start, 2)
    if config.data.strict:
        _enforce_strict(data)
    if data.counts["interactions"] == 0:
        raise UserError(
            f"no interactions left after cleaning {[f.path for f in reviews]}: dropped {dict(data.review_drops.counts)}"
        )
    log.info(
        "cleaned: %d users, %d items, %d interactions (train %d, valid %d, test %d)",
        data.counts["users"],
        data.counts["items"],
        data.counts["interactions"],
        data.counts["train"],
        data.counts["valid"],
        data.counts["test"],
    )

    vectors, text_info = embed_items(data.items, config)

    start = time.perf_counter()
    manifest = build_manifest(reviews + meta, data, text_info, config.to_dict(), seconds)
    staging = storage.staging_beside(out)
    try:
        write_dataset(data, vectors, staging)
        manifest["timing_seconds"]["write"] = round(time.perf_counter() - start, 2)
        write_manifest(manifest, staging)
        storage.publish(staging, out)
    finally:
        storage.remove_staging(staging)  # nothing left when publishing worked
    log.info("prepared dataset written to %s", out)
    return PrepareResult(out, manifest)


def _parse_parallel(
    files: list[InputFile], udf: Any, schema: pa.Schema, chunk_lines: int, stall_timeout: float, role: str
) -> pd.DataFrame:
    """The files' records parsed by Ray Data tasks, one block of lines each, `PARSE_WINDOW_BLOCKS`
    blocks at a time: the driver holds one window's raw lines, not the files' (raw JSON is several
    times what it parses into). Under the stall rule: no block parsed for `stall_timeout` seconds
    ends prepare with what waited."""
    import ray.data

    parts: list[pa.Table] = []
    for window in _windows(record_tables(files, chunk_lines), PARSE_WINDOW_BLOCKS):

        def parsed(window: list[pa.Table] = window) -> Any:  # building it already waits for tasks
            blocks = ray.data.from_arrow(window).map_batches(
                udf, batch_format="pyarrow", batch_size=None, num_cpus=PARSE_TASK_CPU
            )
            return blocks.iter_batches(batch_format="pyarrow", batch_size=None)

        def waited() -> str:
            return stalled_line(
                "prepare",
                f"no block of {role} parsed",
                stall_timeout,
                f"{len(parts)} blocks of {role} lines parsed by Ray Data tasks of {PARSE_TASK_CPU:g} CPU each",
                f"free {PARSE_TASK_CPU:g} CPU for them",
            )

        parts.extend(watched(parsed, stall_timeout, waited))
    if not parts:
        return schema.empty_table().to_pandas()
    frame = pa.concat_tables(parts).to_pandas()
    frame = frame.sort_values(["source", "line"], kind="stable").reset_index(drop=True)
    names = {f.source: f.path for f in files}
    frame["file"] = frame["source"].map(names)
    return frame


def _windows(blocks: Iterator[pa.Table], size: int) -> Iterator[list[pa.Table]]:
    """`blocks` in lists of `size` (the last shorter), each read only when the one before is done."""
    window: list[pa.Table] = []
    for block in blocks:
        window.append(block)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def _enforce_strict(data: CleanDataset) -> None:
    for role, drops in (("reviews", data.review_drops), ("meta", data.meta_drops)):
        for reason in amazon.MALFORMED_REASONS:
            if drops.counts.get(reason):
                example = drops.examples[reason][0] if drops.examples.get(reason) else reason
                raise UserError(
                    f"--strict: {drops.counts[reason]} malformed {role} record(s) ({reason}); first: {example}"
                )


# ---------------------------------------------------------------- the default data, reuse


def with_default_inputs(config: Config) -> Config:
    """Point the config at the generated default dataset when no review files are given.

    The embedded default is generated on first use, in the raw Amazon format, so the demo runs
    exactly the code path that real data runs. A generated folder made by another generator
    version or with other `data.generate_*` settings is generated again, saying what differs.
    """
    config = with_absolute_paths(config)
    if config.data.reviews:
        return config
    from alsoview.data.synthetic import GENERATION_RECORD, GENERATOR_VERSION, generate

    folder = Path(config.data.generated_dir)
    reviews, meta = folder / "reviews.json.gz", folder / "meta.json.gz"
    wanted = {
        "users": config.data.generate_users,
        "items": config.data.generate_items,
        "seed": config.data.generate_seed,
    }
    with storage.locked(folder, "the generated default dataset"):
        storage.clear_leftovers(folder)
        record = folder / GENERATION_RECORD
        differs = _generated_differs(record, GENERATOR_VERSION, wanted) if record.is_file() else None
        if record.is_file() and differs is None:
            log.info("using the generated default dataset in %s", folder)
        else:
            storage.check_replaceable(folder, GENERATION_RECORD, "generated dataset")
            again = "" if differs is None else f" again; the old one differs: {differs}"
            log.info(
                "generating the default dataset in %s (%d users, %d items, seed %d)%s",
                folder,
                config.data.generate_users,
                config.data.generate_items,
                config.data.generate_seed,
                again,
            )
            staging = storage.staging_beside(folder)
            try:
                generate(
                    staging,
                    users=config.data.generate_users,
                    items=config.data.generate_items,
                    seed=config.data.generate_seed,
                )
                storage.publish(staging, folder)
            finally:
                storage.remove_staging(staging)
    data = dataclasses.replace(config.data, reviews=[str(reviews)], meta=[str(meta)])
    return dataclasses.replace(config, data=data)


def _generated_differs(record: Path, version: int, wanted: dict[str, int]) -> str | None:
    """What differs between a generated dataset's record and what the config asks (None: nothing)."""
    try:
        made = json.loads(record.read_text())
    except (OSError, ValueError):
        return f"unreadable {record.name}"
    made_version = made.get("generator_version", 1)  # version 1 wrote no version
    differences = [f"generator version {made_version}, now {version}"] if made_version != version else []
    parameters = made.get("parameters", {})
    differences += [f"{k} {parameters.get(k)}, config asks {v}" for k, v in wanted.items() if parameters.get(k) != v]
    return "; ".join(differences) or None


def _refuse_default_over_named(config: Config) -> None:
    """A command that names no review files means the generated default: it must not prepare that
    over a dataset prepared from files the user named (hours of work at scale), only because
    `data.prepared_dir` points there. Preparing over another default, or over named files with
    other files named, is the usual rule (prepared again, saying why)."""
    manifest_path = Path(config.data.prepared_dir) / layout.MANIFEST
    if config.data.reviews or not manifest_path.is_file():
        return
    try:
        recorded = json.loads(manifest_path.read_text()).get("config", {}).get("data", {})
    except (OSError, ValueError):
        return  # unreadable: stale, prepared again as before
    reviews, generated = recorded.get("reviews") or [], recorded.get("generated_dir")
    if not generated or reviews == [str(Path(generated) / "reviews.json.gz")]:
        return
    more = f" and {len(reviews) - 1} more" if len(reviews) > 1 else ""
    raise UserError(
        f"data.prepared_dir={config.data.prepared_dir} holds a dataset prepared from {reviews[0]}{more}, and this "
        "command names no data.reviews, so it would prepare the generated default dataset over it; to train on "
        "it, name its files (data.reviews=[...] data.meta=[...], or the --config that prepared it); to use the "
        "default, choose another data.prepared_dir"
    )


def ensure_prepared(config: Config) -> Config:
    """Prepare the configured dataset unless an up-to-date one is already on disk.

    Up to date means its manifest records the same `data` and `text` settings and input files
    with the same contents (SHA-256), wherever they now lie: a job's inputs arrive in a fresh
    copy of its working directory on every submission. Anything else is prepared again, and the
    log says why, so a changed filter or file never trains on stale data. Returns the config with
    its inputs resolved (the generated default when none are given).
    """
    _refuse_default_over_named(with_absolute_paths(config))
    config = with_default_inputs(config)
    out = Path(config.data.prepared_dir)
    # One process prepares, the others wait and then find it up to date (jobs, parallel runs).
    with storage.locked(out, "the prepared dataset"):
        manifest_path = out / layout.MANIFEST
        if manifest_path.is_file():
            stale = why_stale(json.loads(manifest_path.read_text()), config.dataset_settings())
            if stale is None:
                log.info("using the prepared dataset in %s", out)
                return config
            log.info("the prepared dataset in %s is out of date (%s): preparing it again", out, stale)
        prepare(config, dashboard=True)  # a Ray Train run follows
    return config
