"""The co-occurrence peer with the user's items weighted by recency, on real data: how much the
order of a user's items says under the leave-one-out protocol, before any training.

    python experiments/recency_peer.py                       # Grocery_2014 and Magazine, r = 1 .. 0.2
    python experiments/recency_peer.py --datasets magazine --recency 1,0.8
    python experiments/recency_peer.py --recency 1,0.6,0.4 --proximity 1,0.8 --order any,forward

The scorer is the model's own co-occurrence head (`model.heads.cooccurrence`,
`model.heads.cooccurrence.recency` r) at its starting weight 1, untrained: log(1 + s) ranks as s, the
co-occurrence peer's score with the k-th most recent of the user's items weighted r^k. At r = 1 it
is the `cooccurrence` baseline (same numbers). `--proximity` p and `--order` set how the head's
table counts a user's pair of items g places apart in time order (`model.heads.cooccurrence.proximity`:
p^(g - 1); `model.heads.cooccurrence.forward` with order `forward`: only pairs whose scored item came
after); p 1 and order `any` is the peer's users-who-had-both. Test split, every scorer knowing the user's train
and validation items (`Catalog.inputs_for("test")`); protocols `full` and `sampled99`.
Datasets are real_quality.py's (prepared once with the hashing text encoder).

Prints a Markdown table and writes experiments/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # the benchmarks' helpers
from _common import print_table, ray_local, write_json  # noqa: E402
from real_quality import prepared_dataset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

METRICS = ("test/full/ndcg@10", "test/full/hr@10", "test/sampled99/hr@5", "test/sampled99/ndcg@5")


class HeadScorer:
    """A model's co-occurrence head alone behind the Scorer interface (`score_all`)."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    def score_all(self, users: Any) -> Any:
        import torch

        from alsoview.model.part import Users

        head, ids = self.model.heads["cooccurrence"], torch.as_tensor(users)
        with torch.inference_mode():  # the head reads the users' ids only
            return head.score_all(Users(ids, torch.zeros(len(ids), 0)), self.model.item_tower).numpy()


def recency_row(
    catalog: Any, cases: Any, recency: float, proximity: float = 1.0, forward: bool = False
) -> dict[str, float]:
    import numpy as np

    from alsoview.config import load_config
    from alsoview.evaluation.protocols import score_rows, summarize
    from alsoview.model import build_model

    config = load_config(
        None,
        [
            "model.heads.cooccurrence=true",
            f"model.heads.cooccurrence.recency={recency}",
            f"model.heads.cooccurrence.proximity={proximity}",
            f"model.heads.cooccurrence.forward={str(forward).lower()}",
            "model.user.history=true",
            "model.heads.dot=true",
            "model.heads.mlp=false",
        ],
    )
    scorer = HeadScorer(build_model(catalog.inputs_for("test"), config.model, config.seed))
    protocols = ("full", "sampled99")
    metrics = summarize(score_rows(scorer, cases, np.arange(len(cases.users)), protocols), "test", protocols)
    return {m: metrics[m] for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="grocery,magazine")
    parser.add_argument("--recency", default="1,0.8,0.6,0.4,0.2", help="comma-separated r in (0, 1]")
    parser.add_argument("--proximity", default="1", help="comma-separated p in (0, 1]")
    parser.add_argument("--order", default="any", help="comma-separated: any, forward")
    parser.add_argument("--out", default="recency_peer")
    args = parser.parse_args()

    from alsoview.data.catalog import load_catalog
    from alsoview.evaluation.protocols import build_cases

    ray_local()  # preparing a dataset runs Ray Data; scoring runs in this process
    rows = []
    for dataset in args.datasets.split(","):
        catalog = load_catalog(prepared_dataset(dataset))
        cases = build_cases(catalog, "test", seed=0)
        for order in args.order.split(","):
            if order not in ("any", "forward"):
                raise SystemExit(f"--order: {order!r} is not one of any, forward")
            for proximity in (float(p) for p in args.proximity.split(",")):
                for recency in (float(r) for r in args.recency.split(",")):
                    row = {
                        "dataset": dataset,
                        "recency": recency,
                        "proximity": proximity,
                        "order": order,
                        **recency_row(catalog, cases, recency, proximity, order == "forward"),
                    }
                    print(
                        f"[bench] {dataset} r={recency:g} p={proximity:g} {order}: "
                        + "  ".join(f"{m} {row[m]:.4f}" for m in METRICS),
                        flush=True,
                    )
                    rows.append(row)
    table = print_table(
        "The co-occurrence peer weighted by recency and by the pairs' places (test split, leave-one-out)",
        [{**r, **{m: f"{r[m]:.4f}" for m in METRICS}} for r in rows],
        ["dataset", "recency", "proximity", "order", *METRICS],
    )
    write_json(args.out, {"rows": rows, "table": table, "args": vars(args)}, RESULTS)


if __name__ == "__main__":
    main()
