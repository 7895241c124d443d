"""`alsoview prepare` at Video Games scale: wall time, rows/s and peak memory, hashing text encoder;
and the transformer encoder's items/s on the same descriptions, measured apart.

    python benchmarks/prepare.py
    python benchmarks/prepare.py --minilm-items 256
    python benchmarks/prepare.py --raw data/bench/scaling-large/16x/raw --minilm-items 0 --name prepare-16x

The prepare runs as its own process (``python -m alsoview.cli prepare``, which starts its own
local Ray, as a user's run does); its peak memory is the largest sum of PSS over that process
and all its descendants (Ray's GCS, raylet, dashboard and workers), sampled every 0.25 s, so
pages shared through Ray's object store count once; at the peak, its parts by process
(`peak_by_process`). Stage times come from the manifest. `--raw` prepares other raw files
(reviews.json.gz and meta.json.gz in a folder, as `alsoview generate` writes them, e.g. a
scale of benchmarks/scaling.py). Writes benchmarks/results/prepare.json (or `--name`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, PeakMemory, command_line, ensure_vg_raw, print_table, vg_prepare_command, write_json


def run_prepare(raw: Path, out: Path) -> dict[str, Any]:
    command = vg_prepare_command(raw, out)
    begin = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakMemory(process.pid) as memory:
        _, stderr = process.communicate()
    wall = time.perf_counter() - begin
    if process.returncode != 0:
        raise SystemExit(f"prepare failed ({process.returncode}):\n{stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    lines = manifest["rows"]["reviews"]["read"] + manifest["rows"]["meta"]["read"]
    return {
        "wall_seconds": wall,
        "peak_pss_gib": memory.peak_bytes / 2**30,
        "memory_samples": memory.samples,
        "input_lines": lines,
        "lines_per_s": lines / wall,
        "review_lines": manifest["rows"]["reviews"]["read"],
        "meta_lines": manifest["rows"]["meta"]["read"],
        "stages_seconds": manifest["timing_seconds"],
        "counts": manifest["counts"],
        "peak_by_process": {role: round(found["pss"] / 2**30, 3) for role, found in memory.at_peak.items()},
    }


def transformer_items_per_s(prepared: Path, n_items: int) -> dict[str, Any]:
    """MiniLM on the first `n_items` item texts of the prepared dataset, in this process."""
    import pandas as pd
    import torch

    from alsoview.data.text import build_text_encoder, resolve_text_encoder
    from alsoview.distributed.embed import item_texts

    spec, reason = resolve_text_encoder("auto")
    if spec.name != "minilm":
        return {"status": f"skipped: {reason}"}
    items = pd.read_parquet(prepared / "items.parquet").head(n_items + 64)
    texts = item_texts(items)
    encoder = build_text_encoder(spec, batch_size=64, device="cpu")
    encoder.encode(texts[:64])  # warm-up
    begin = time.perf_counter()
    encoder.encode(texts[64 : 64 + n_items])
    seconds = time.perf_counter() - begin
    words = sum(len(t.split()) for t in texts[64 : 64 + n_items]) / max(1, n_items)
    return {
        "status": "ok",
        "items": n_items,
        "seconds": seconds,
        "items_per_s": n_items / seconds,
        "mean_words_per_text": words,
        "torch_threads": torch.get_num_threads(),
        "vg_17k_items_minutes": 17_000 / (n_items / seconds) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm-items", type=int, default=256, help="items for the transformer measurement (0: skip)")
    parser.add_argument("--raw", type=Path, help="folder of reviews.json.gz and meta.json.gz (default: VG scale)")
    parser.add_argument("--name", default="prepare", help="results file name")
    args = parser.parse_args()

    raw = args.raw or ensure_vg_raw()
    out = Path(tempfile.mkdtemp(prefix="alsoview-bench-prepare-"))
    try:
        result = run_prepare(raw, out)
        print(f"[bench] prepare: {result['wall_seconds']:.1f} s, peak {result['peak_pss_gib']:.2f} GiB PSS", flush=True)
        minilm = transformer_items_per_s(out, args.minilm_items) if args.minilm_items else {"status": "skipped"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stages = result["stages_seconds"]
    rows = [
        {
            "step": "prepare, hashing encoder (whole command, Ray start included)",
            "seconds": result["wall_seconds"],
            "rows_per_s": result["lines_per_s"],
            "peak_GiB": result["peak_pss_gib"],
        }
    ]
    rows += [
        {"step": f"  stage: {name}", "seconds": value} for name, value in stages.items() if "per_second" not in name
    ]
    if minilm["status"] == "ok":
        rows.append(
            {
                "step": f"MiniLM text encoder alone ({minilm['items']} items, {minilm['torch_threads']} threads)",
                "seconds": minilm["seconds"],
                "rows_per_s": minilm["items_per_s"],
            }
        )
    else:
        print(f"[bench] MiniLM: {minilm['status']}", flush=True)
    table = print_table(
        f"Prepare of {'the Video Games scale' if args.raw is None else args.raw.name} "
        f"({result['review_lines']:,} review lines, {result['meta_lines']:,} meta lines)",
        rows,
        ["step", "seconds", "rows_per_s", "peak_GiB"],
    )
    command = command_line("benchmarks/prepare.py", args)
    write_json(args.name, {"prepare": result, "minilm": minilm, "table": table, "command": command})


if __name__ == "__main__":
    main()
