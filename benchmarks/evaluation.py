"""Full-ranking scoring throughput: every item for each user, pair by pair against the shortcut.

    python benchmarks/evaluation.py
    python benchmarks/evaluation.py --users 2000 --pair-users 200 --device cuda

On the generated Video-Games-scale dataset, with the design's default model (dim 64, MLP
128-64, MiniLM-sized text vectors when the prepared set has them). The weights are the
initial ones: the cost of scoring does not depend on their values.

- pair by pair: ``evaluate.ModelScorer.score``, the model's forward pass on every (user, item)
  pair of [users x all items] in chunks of 65,536 pairs (how evaluation scored before);
- all items: ``ModelScorer.score_all`` -> ``TowerModel.score_all_items``, which computes the
  first layer's user part once per user and its item part once per item, then only adds them
  and runs the rest of the MLP per pair (what `alsoview evaluate` uses for full ranking).

Both are run on the same users; the largest absolute difference of their logits is printed
(float rounding only). Writes benchmarks/results/evaluation.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import ensure_vg_prepared, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="users ranked over all items by the shortcut")
    parser.add_argument("--pair-users", type=int, default=100, help="users ranked pair by pair (slow)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from alsoview.catalog import load_catalog
    from alsoview.config import load_config
    from alsoview.model import build_model
    from alsoview.protocols import ModelScorer

    if args.threads:
        torch.set_num_threads(args.threads)
    prepared = ensure_vg_prepared()
    catalog = load_catalog(str(prepared))
    config = load_config(None, [f"data.prepared_dir={prepared}"])
    torch.manual_seed(0)
    scorer = ModelScorer(build_model(catalog, config), device=args.device)
    users = np.random.default_rng(0).choice(np.arange(1, catalog.n_users), size=args.users, replace=False)
    items = np.arange(catalog.n_items, dtype=np.int64)
    pair_users = users[: args.pair_users]

    rows: list[dict[str, Any]] = []
    begin = time.perf_counter()
    pairwise = scorer.score(pair_users, np.broadcast_to(items, (len(pair_users), len(items))))
    rows.append(_row("pair by pair (forward per pair)", len(pair_users), len(items), time.perf_counter() - begin))

    scorer.score_all(users[:8])  # warm-up (first-call allocations)
    begin = time.perf_counter()
    every = np.concatenate([scorer.score_all(chunk) for chunk in np.array_split(users, max(1, len(users) // 256))])
    rows.append(_row("all items (user and item parts once)", len(users), len(items), time.perf_counter() - begin))
    rows[1]["speed-up"] = rows[1]["pairs/s"] / rows[0]["pairs/s"]
    max_difference = float(np.abs(every[: len(pair_users)] - pairwise).max())

    table = print_table(
        f"Full-ranking scoring, {catalog.n_items:,} items, {torch.get_num_threads()} torch threads, {args.device}",
        rows,
        ["path", "users", "pairs", "seconds", "pairs/s", "speed-up"],
    )
    print(f"largest |logit difference| between the two paths: {max_difference:.2e}")
    write_json(
        "evaluation",
        {
            "args": vars(args),
            "items": int(catalog.n_items),
            "torch_threads": torch.get_num_threads(),
            "rows": rows,
            "max_abs_logit_difference": max_difference,
            "table": table,
        },
    )


def _row(path: str, users: int, items: int, seconds: float) -> dict[str, Any]:
    pairs = users * items
    return {"path": path, "users": users, "pairs": pairs, "seconds": seconds, "pairs/s": pairs / seconds}


if __name__ == "__main__":
    main()
