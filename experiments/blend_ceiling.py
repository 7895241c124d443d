"""How far mixing a trained model with the recency-weighted co-occurrence peer could go: the
model's logit + alpha * log(1 + the peer's score), for every (recency r, alpha) pair, scored on the
validation split and on the test split.

    python experiments/blend_ceiling.py                       # Magazine, harder of 2 + co-occurrence head, seed 0
    python experiments/blend_ceiling.py --dataset grocery --variant recommended+softmax

The pair chosen on validation is what a validation-fitted mixture would give; the best pair on
the *test* split is a ceiling no such mixture can pass (it is chosen on the numbers it reports).
The peer is the model's own co-occurrence head untrained (experiments/recency_peer.py). One model
trained in process as in real_quality.py (its variants, epochs and patience), each split scored
with what the model may know there (`Catalog.inputs_for`).

Prints both and writes experiments/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # the benchmarks' helpers
from _common import ray_local, write_json  # noqa: E402
from real_quality import EPOCHS, prepared_dataset, variant_config  # noqa: E402
from recency_peer import RESULTS, HeadScorer  # noqa: E402

METRIC = "full/ndcg@10"


class Mixture:
    """`model` + alpha * log1p(`peer`'s score), both behind `score_all`."""

    def __init__(self, model: Any, peer: Any, alpha: float) -> None:
        self.model, self.peer, self.alpha = model, peer, alpha

    def score_all(self, users: Any) -> Any:
        # the peer head's logits are log(1 + s) at weight 1
        return self.model.score_all(users) + self.alpha * self.peer.score_all(users)


def peer_for(catalog: Any, recency: float) -> HeadScorer:
    from alsoview.config import load_config
    from alsoview.model import build_model

    overrides = ["model.heads.cooccurrence=true", f"model.heads.cooccurrence.recency={recency}"]
    overrides += ["model.user.history=true", "model.heads.dot=true", "model.heads.mlp=false"]
    config = load_config(None, overrides)
    return HeadScorer(build_model(catalog, config.model, config.seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="magazine")
    parser.add_argument("--variant", default="recommended+harder-of-2+cooccurrence-head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recency", default="1,0.8,0.5")
    parser.add_argument("--alphas", default="0,0.5,1,2,4,8,1000")
    parser.add_argument("--out", default="blend_ceiling")
    args = parser.parse_args()

    import numpy as np
    import torch

    from alsoview.data.catalog import load_catalog
    from alsoview.distributed.evaluate import ModelFactory
    from alsoview.evaluation.protocols import build_cases, score_rows, summarize
    from alsoview.training.trainer import fit_in_process

    torch.set_num_threads(1)
    ray_local()  # preparing a dataset runs Ray Data; training and scoring run in this process
    prepared = prepared_dataset(args.dataset)
    catalog = load_catalog(prepared)
    epochs, patience = EPOCHS[args.dataset]
    config = variant_config(
        args.variant, prepared, [f"seed={args.seed}", f"train.epochs={epochs}", f"train.patience={patience}"]
    )
    model, _ = fit_in_process(catalog, config)
    scores: dict[str, dict[tuple[float, float], float]] = {}
    for split in ("valid", "test"):
        known = catalog.inputs_for(split)
        cases = build_cases(catalog, split, seed=0)
        trained = ModelFactory(model.state_dict(), config, known)("cpu")
        rows = np.arange(len(cases.users))
        scores[split] = {}
        for recency in (float(r) for r in args.recency.split(",")):
            peer = peer_for(known, recency)
            for alpha in (float(a) for a in args.alphas.split(",")):
                counts = score_rows(Mixture(trained, peer, alpha), cases, rows, ("full",))
                scores[split][(recency, alpha)] = summarize(counts, split, ("full",))[f"{split}/{METRIC}"]
    on_valid = max(scores["valid"], key=scores["valid"].get)
    ceiling = max(scores["test"], key=scores["test"].get)
    result = {
        "model_alone": scores["test"][(1.0, 0.0)] if (1.0, 0.0) in scores["test"] else None,
        "chosen_on_validation": {"recency_alpha": on_valid, "test": scores["test"][on_valid]},
        "ceiling_on_test": {"recency_alpha": ceiling, "test": scores["test"][ceiling]},
    }
    print(f"[bench] {args.dataset} {args.variant} seed {args.seed}: {result}", flush=True)
    write_json(
        args.out,
        {
            **result,
            "test": [[r, a, v] for (r, a), v in scores["test"].items()],
            "valid": [[r, a, v] for (r, a), v in scores["valid"].items()],
            "args": vars(args),
        },
        RESULTS,
    )


if __name__ == "__main__":
    main()
