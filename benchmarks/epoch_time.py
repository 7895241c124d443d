"""Epoch time at Video Games scale with the default config, extrapolated to the design's 50 epochs.

    python benchmarks/epoch_time.py              # 3 epochs; the first is warm-up
    python benchmarks/epoch_time.py --epochs 4 model.sparse_embeddings=false

Runs ``alsoview.distributed.train.train`` on the generated Video-Games-scale dataset with the default
config (one worker; only ``train.epochs`` and the run directory are changed, plus any
overrides given). An epoch's time here is everything between two reports: the data feed, the
steps, validation and the checkpoint. 50 epochs = fit start-up (the first epoch's extra time)
+ 50 x the median of the later epochs. Writes benchmarks/results/epoch_time.json.
"""

from __future__ import annotations

import argparse
import tempfile

from _common import ensure_vg_prepared, median, print_table, ray_local, write_json
from training import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides (default: none)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")
    prepared = str(ensure_vg_prepared())
    ray_local()
    with tempfile.TemporaryDirectory(prefix="alsoview-bench-") as runs_dir:
        result = pipeline(prepared, args.overrides, workers=1, epochs=args.epochs, runs_dir=runs_dir)
    epochs = result["epoch_seconds_by_epoch"]
    steady = median(epochs[1:])
    startup = result["fit_wall_seconds"] - sum(epochs)  # Ray Train start, first feed, final outputs
    total = startup + (epochs[0] - steady) + 50 * steady
    rows = [{"what": f"epoch {i}", "seconds": s} for i, s in enumerate(epochs)]
    rows += [
        {"what": "fit start-up and outputs (outside epochs)", "seconds": startup},
        {"what": "median epoch after warm-up", "seconds": steady},
        {"what": "50 epochs, extrapolated (minutes)", "seconds": total / 60},
    ]
    table = print_table(
        f"Epoch time, Video Games scale, default config ({result['samples_per_epoch']:,.0f} "
        f"samples/epoch, {result['samples_per_s']:,.0f} samples/s)",
        rows,
        ["what", "seconds"],
    )
    write_json(
        "epoch_time",
        {
            "dataset": prepared,
            "overrides": args.overrides,
            "run": result,
            "median_epoch_seconds": steady,
            "fifty_epochs_minutes": total / 60,
            "table": table,
            "command": "python benchmarks/epoch_time.py " + " ".join(args.overrides),
        },
    )


if __name__ == "__main__":
    main()
