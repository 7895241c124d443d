"""Do the cheaper model ops change the results? Same data, same seeds, three implementations:

- ``reference``: the model as first built: ``nn.Dropout`` and dense ``torch.optim.Adam`` (foreach);
- ``dense``: ``FastDropout`` and fused Adam (``model.sparse_embeddings=false``);
- ``sparse``: ``FastDropout``, sparse embedding gradients with RowSparseAdam (SparseAdam's
  update) on the embeddings and fused Adam on the rest (``model.sparse_embeddings=true``).

    python benchmarks/quality.py                    # the generated default dataset, 3 seeds, 15 epochs
    python benchmarks/quality.py --prepared DIR --seeds 5 --epochs 20

Each run trains in-process with the training pipeline's pure pieces (the same per-block
mixing and batch order as ``alsoview train`` with one worker), keeps the epoch with the best
``valid/auc``, and scores ``test`` with the evaluation protocols. Prints mean +- standard
deviation over seeds per implementation; writes benchmarks/results/quality.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _common import ROOT, print_table, write_json

METRICS = ("valid/auc", "test/full/ndcg@10", "test/full/auc", "test/hard/auc", "test/sampled100/ndcg@10")


def train_in_process(catalog: Any, config: Any, variant: str) -> tuple[Any, dict[str, float]]:
    """`alsoview.training.trainer.fit_in_process` (the worker's epoch function, in process) with the variant's model."""
    import torch

    from alsoview.model import build_model
    from alsoview.training.trainer import fit_in_process

    model = optimizer = None
    if variant == "reference":
        torch.manual_seed(config.seed)
        model = build_model(catalog, config.model, config.seed)
        layers = model.heads["mlp"].layers
        for index, layer in enumerate(layers):
            if type(layer).__name__ == "FastDropout":
                layers[index] = torch.nn.Dropout(layer.p)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    model, state = fit_in_process(catalog, config, model=model, optimizer=optimizer)
    return model, {"valid/auc": max(epoch["valid/auc"] for epoch in state.history)}


def evaluate_model(model: Any, catalog: Any, config: Any) -> dict[str, float]:
    import numpy as np

    from alsoview.distributed.evaluate import ModelFactory
    from alsoview.evaluation.protocols import build_cases, score_rows, summarize

    cases = build_cases(catalog, "test", config.seed)
    scorer = ModelFactory(model.state_dict(), config, catalog.inputs_for("test"))("cpu")  # valid items known
    counts = score_rows(scorer, cases, np.arange(len(cases.users)))
    return summarize(counts, "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", help="a prepared dataset (default: the generated default one, made if missing)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--variants", default="reference,dense,sparse")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from alsoview.config import load_config
    from alsoview.data.catalog import load_catalog

    torch.set_num_threads(args.threads)
    if args.prepared is None:  # the embedded default dataset, generated and prepared on first use
        from alsoview.distributed.prepare import ensure_prepared

        default = load_config(
            None,
            [
                f"data.generated_dir={ROOT / 'data' / 'generated' / 'default'}",
                f"data.prepared_dir={ROOT / 'data' / 'prepared' / 'default'}",
            ],
        )
        args.prepared = ensure_prepared(default).data.prepared_dir
    catalog = load_catalog(args.prepared)
    runs: list[dict[str, Any]] = []
    for variant in args.variants.split(","):
        for seed in range(args.seeds):
            config = load_config(
                None,
                [
                    f"data.prepared_dir={args.prepared}",
                    f"seed={seed}",
                    f"train.epochs={args.epochs}",
                    "train.early_stopping_metric=valid/auc",
                    "train.patience=0",
                    f"model.sparse_embeddings={'true' if variant == 'sparse' else 'false'}",
                ],
            )
            begin = time.perf_counter()
            model, valid = train_in_process(catalog, config, variant)
            metrics = {**valid, **evaluate_model(model, catalog, config)}
            runs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "seconds": time.perf_counter() - begin,
                    **{m: metrics[m] for m in METRICS},
                }
            )
            print(f"[bench] {variant} seed {seed}: " + "  ".join(f"{m} {metrics[m]:.4f}" for m in METRICS), flush=True)

    rows = []
    for variant in args.variants.split(","):
        mine = [r for r in runs if r["variant"] == variant]
        row: dict[str, Any] = {"variant": variant, "seeds": len(mine)}
        for m in METRICS:
            values = [r[m] for r in mine]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            row[m] = f"{statistics.mean(values):.4f} ± {spread:.4f}"
        row["seconds/run"] = f"{statistics.mean(r['seconds'] for r in mine):.0f}"
        rows.append(row)
    table = print_table(
        f"Quality by implementation (mean ± std over {args.seeds} seeds, {args.epochs} epochs, best valid/auc epoch)",
        rows,
        ["variant", "seeds", *METRICS, "seconds/run"],
    )
    write_json(
        "quality",
        {
            "dataset": args.prepared,
            "epochs": args.epochs,
            "runs": runs,
            "table": table,
            "command": f"python benchmarks/quality.py --seeds {args.seeds} --epochs {args.epochs}",
        },
    )


if __name__ == "__main__":
    main()
