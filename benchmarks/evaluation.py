"""Full-ranking scoring throughput: every item for each user, pair by pair against the shortcut,
for the design's MLP and for the dot-product model of configs/video_games.yaml.

    python benchmarks/evaluation.py
    python benchmarks/evaluation.py --users 2000 --pair-users 200 --device cuda

On the generated Video-Games-scale dataset (MiniLM-sized text vectors when the prepared set has
them). The weights are the initial ones: the cost of scoring does not depend on their values.
Two models:

- `design`: every default (dim 64, MLP 128-64 over the concatenation);
- `dot product`: the model settings of configs/video_games.yaml (the users' items, a dot product,
  no MLP, also-view as a relation).

Two paths each:

- pair by pair: ``evaluate.ModelScorer.score``, the model's forward pass on every (user, item)
  pair of [users x all items] in chunks of 65,536 pairs (how evaluation scored before);
- all items: ``ModelScorer.score_all`` -> ``TowerModel.score_all_items``, each head's
  ``score_all``: for the MLP the first layer's user part once per user and its item part once per
  item, then the rest of the MLP per pair; for the dot product one matrix product per block of
  users; for the relation head each user's counts scattered into a row (what `alsoview evaluate`
  and every epoch's validation use for full ranking).

Both paths run on the same users; the largest absolute difference of their logits is printed
(float rounding only). `x design all items` compares each path with the design's all-items path.
Writes benchmarks/results/evaluation.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import ROOT, ensure_vg_prepared, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="users ranked over all items by the shortcut")
    parser.add_argument("--pair-users", type=int, default=100, help="users ranked pair by pair (slow)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from alsoview.config import load_config
    from alsoview.data.catalog import load_catalog
    from alsoview.evaluation.protocols import ModelScorer
    from alsoview.model import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    prepared = ensure_vg_prepared()
    catalog = load_catalog(str(prepared))
    users = np.random.default_rng(0).choice(np.arange(1, catalog.n_users), size=args.users, replace=False)
    items = np.arange(catalog.n_items, dtype=np.int64)
    pair_users = users[: args.pair_users]
    models = {
        "design": load_config(None, [f"data.prepared_dir={prepared}"]),
        "dot product": load_config(
            None, [f"data.prepared_dir={prepared}", *model_overrides(ROOT / "configs" / "video_games.yaml")]
        ),
    }

    rows: list[dict[str, Any]] = []
    differences = {}
    for name, config in models.items():
        torch.manual_seed(0)
        scorer = ModelScorer(build_model(catalog, config.model, config.seed).eval(), device=args.device)
        begin = time.perf_counter()
        pairwise = scorer.score(pair_users, np.broadcast_to(items, (len(pair_users), len(items))))
        rows.append(_row(name, "pair by pair", len(pair_users), len(items), time.perf_counter() - begin))
        scorer.score_all(users[:8])  # warm-up (first-call allocations)
        begin = time.perf_counter()
        every = np.concatenate([scorer.score_all(chunk) for chunk in np.array_split(users, max(1, len(users) // 256))])
        rows.append(_row(name, "all items", len(users), len(items), time.perf_counter() - begin))
        differences[name] = float(np.abs(every[: len(pair_users)] - pairwise).max())
    design_all_items = rows[1]["pairs/s"]
    for row in rows:
        row["x design all items"] = row["pairs/s"] / design_all_items

    table = print_table(
        f"Full-ranking scoring, {catalog.n_items:,} items, {torch.get_num_threads()} torch threads, {args.device}",
        rows,
        ["model", "path", "users", "pairs", "seconds", "pairs/s", "x design all items"],
    )
    for name, difference in differences.items():
        print(f"{name}: largest |logit difference| between the two paths: {difference:.2e}")
    write_json(
        "evaluation",
        {
            "args": vars(args),
            "items": int(catalog.n_items),
            "torch_threads": torch.get_num_threads(),
            "rows": rows,
            "max_abs_logit_difference": differences,
            "table": table,
        },
    )


def model_overrides(path: Any) -> list[str]:
    """The `model.*` settings of a config file as overrides."""
    import yaml

    return [
        f"model.{key}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in yaml.safe_load(path.read_text())["model"].items()
    ]


def _row(model: str, path: str, users: int, items: int, seconds: float) -> dict[str, Any]:
    pairs = users * items
    return {
        "model": model,
        "path": path,
        "users": users,
        "pairs": pairs,
        "seconds": seconds,
        "pairs/s": pairs / seconds,
    }


if __name__ == "__main__":
    main()
