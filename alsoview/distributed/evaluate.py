"""`alsoview evaluate` and the Ray Data scoring every evaluation runs: a pool of actors, each
holding every scorer once, over batches of the cases (the protocols are `protocols.py`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alsoview.config.schema import TrainConfig
from alsoview.data.catalog import Catalog
from alsoview.distributed.stall import stalled_line, watched
from alsoview.evaluation.protocols import (
    EvalCases,
    ModelScorer,
    build_cases,
    markdown_table,
    reference_scorers,
    score_rows,
    summarize,
)
from alsoview.logs import Progress

log = logging.getLogger("alsoview")

# What Ray Data asks for each map actor when not told (a GPU one too): a stalled pool names it
SCORING_ACTOR_CPU = 1.0
DEFAULT_STALL_TIMEOUT = TrainConfig.stall_timeout


class _CaseScorers:
    """Ray Data actor: builds every scorer once (model weights loaded once per actor) and scores
    each batch of cases with all of them, so an evaluation starts one actor pool, not one per scorer."""

    def __init__(self, scorers_ref: list, cases_ref: list, device: str):
        import ray

        self.cases: EvalCases = ray.get(cases_ref[0])
        self.scorers = [_built(scorer, device) for scorer in ray.get(scorers_ref[0])]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch["row"].astype(np.int64)
        out: dict[str, np.ndarray] = {}
        for index, scorer in enumerate(self.scorers):
            out.update({f"{index}/{key}": value for key, value in score_rows(scorer, self.cases, rows).items()})
        return out


def _built(scorer: Any, device: str) -> Any:
    """A scorer, or the scorer a factory (a trained model's weights) builds on `device`."""
    return scorer(device) if callable(scorer) and not hasattr(scorer, "score") else scorer


@dataclass(frozen=True)
class ModelFactory:
    """Ships a model's weights to the actors; each builds the model once, on its device."""

    state: dict
    config: Any  # alsoview.config.Config of the run
    catalog: Catalog

    def __call__(self, device: str) -> ModelScorer:
        from alsoview.model import build_model

        model = build_model(self.catalog, self.config.model, self.config.seed)
        model.load_state_dict(self.state)
        return ModelScorer(model, device)


def evaluate_scorers(
    scorers: dict[str, Any],
    cases: EvalCases,
    batch_users: int = 256,
    actors: int = 1,
    use_gpu: bool = False,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> dict[str, dict[str, float]]:
    """Every scorer over the cases in one pass of a Ray Data actor pool; metrics per scorer.

    Models go to the GPU when `use_gpu` (each actor then takes one); baselines score with numpy.
    No batch scored for `stall_timeout` seconds (0: wait for ever) ends it with what waited.
    """
    import ray
    import ray.data

    names = list(scorers)
    on_gpu = use_gpu and any(isinstance(s, ModelFactory) for s in scorers.values())
    shipped = ([ray.put(list(scorers.values()))], [ray.put(cases)], "cuda" if on_gpu else "cpu")

    def scored() -> Any:
        dataset = ray.data.from_items([{"row": r} for r in range(len(cases.users))]).map_batches(
            _CaseScorers,
            fn_constructor_args=shipped,
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch_users,
            batch_format="numpy",
            num_gpus=1 if on_gpu else 0,  # and Ray Data's default SCORING_ACTOR_CPU
        )
        return dataset.iter_batches(batch_format="numpy", batch_size=None)

    parts = []
    progress = Progress(f"scoring {len(names)} scorers", len(cases.users), f"{cases.split} users")

    def waited() -> str:
        each = f"{SCORING_ACTOR_CPU:g} CPU" + (" + 1 GPU" if on_gpu else "")
        return stalled_line(
            "evaluate",
            f"no batch of {cases.split} users scored",
            stall_timeout,
            f"{progress.done} of {len(cases.users)} users scored by a pool of {actors} Ray Data scoring "
            f"actors ({each} each)",
            f"free {each} for at least one of them",
            on_gpu,
        )

    for part in watched(scored, stall_timeout, waited):
        parts.append(part)
        progress.advance(len(next(iter(part.values()))))
    results: dict[str, dict[str, float]] = {}
    for index, name in enumerate(names):
        prefix = f"{index}/"
        counts = {
            key[len(prefix) :]: np.concatenate([p[key] for p in parts]) for key in parts[0] if key.startswith(prefix)
        }
        results[name] = summarize(counts, cases.split)
        log.info(
            "evaluated %s on %d %s users: full ndcg@10 %.4f, sampled100 hr@10 %.4f, hard auc %.4f",
            name,
            len(cases.users),
            cases.split,
            results[name][f"{cases.split}/full/ndcg@10"],
            results[name][f"{cases.split}/sampled100/hr@10"],
            results[name][f"{cases.split}/hard/auc"],
        )
    return results


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    max_users: int | None = None,
    batch_users: int = 256,
    actors: int = 1,
    stall_timeout: float | None = None,
) -> dict[str, dict[str, float]]:
    """`alsoview evaluate`: the run's best model and the baselines on every protocol (`run_dir`:
    a path or a run name, as `find_run` resolves it). `stall_timeout`: the run's own
    train.stall_timeout unless given.

    Writes the model's keys into the run's metrics.json, and evaluation.json / evaluation.md
    with every scorer.
    """
    from alsoview.data.catalog import load_catalog
    from alsoview.distributed.runtime import cluster_has_gpus, init_ray
    from alsoview.training.checkpoint import (
        EVALUATION_FILE,
        find_run,
        load_saved_model,
        read_metrics,
        run_dataset,
        write_metrics,
    )

    run = find_run(run_dir)
    saved = load_saved_model(run)
    stall_timeout = saved.config.train.stall_timeout if stall_timeout is None else stall_timeout
    catalog = load_catalog(run_dataset(run, saved))
    log.info(init_ray())
    seed = saved.config.seed
    cases = build_cases(catalog, split, seed, max_users)
    known = catalog.inputs_for(split)  # test: the validation items are known too, to every scorer
    scorers: dict[str, Any] = {"model": ModelFactory(saved.state, saved.config, known)}
    references = reference_scorers(known, seed)
    scorers.update(references.scorers)
    results = evaluate_scorers(scorers, cases, batch_users, actors, cluster_has_gpus(), stall_timeout)

    write_metrics(run, {**read_metrics(run), **results["model"]})
    (run / EVALUATION_FILE).write_text(json.dumps(results, indent=2) + "\n")
    (run / "evaluation.md").write_text(markdown_table(results, split, references.skipped))
    return results
