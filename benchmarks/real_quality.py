"""Quality on real Amazon data: model variants x also-view fractions x protocols, against every
baseline and peer, mean +- std over seeds.

    python benchmarks/real_quality.py                                  # docs/quality.md's ablations: both sets, 3 seeds
    python benchmarks/real_quality.py --datasets magazine              # one set (Magazine: about 40 min here)
    python benchmarks/real_quality.py --datasets grocery --seeds 1 --variants recommended+softmax
    python benchmarks/real_quality.py --datasets grocery --threads 1 --jobs 2 --resume   # 2 runs at once, go on
    python benchmarks/real_quality.py --datasets generated   # the demo's generated data, not real
    python benchmarks/real_quality.py --datasets magazine,gift_cards --variants start-points   # the shipped settings

Data: the real files in ../shared/data/realworld (or $ALSOVIEW_REALWORLD_DIR), prepared once with
the hashing text encoder under data/bench/real/<name>. Every model trains in this process with
`alsoview.training.trainer.fit_in_process` (the Ray Train worker's own epoch function, one worker's batches),
stops early on `valid/full/ndcg@10` (up to each set's epochs and patience: Grocery 20 and 4,
Magazine 100 and 10, its 348 users give few steps an epoch; --epochs and --patience override
both) and is scored on the whole test split with the evaluation protocols (`full`: every item the
user never had; `sampled100`; `sampled99`, the leaderboards'; `hard`: the held-out item's
also-view items), every scorer knowing the user's train and validation items
(`Catalog.inputs_for("test")`). Baselines (popularity, co-occurrence, related) and peers (ALS,
BPR from `implicit`, untuned) are fitted on the same pairs.

A variant is a base and the YAML overlays applied on top of it, joined by `+`
(`recommended+softmax+recency`): the base `design` (the original design, every default: concat
MLP, dropout 0.5, lr 0.01, batch 512) or `recommended` (configs/video_games.yaml), then each name
a file in configs/variants/ (`softmax.yaml`, `harder-of-2.yaml`, ...: each says what it changes),
refining the config in order as `alsoview --config A --config B` does. A variant whose overlays
set the also-view fraction runs at that fraction only; the others run at every --fractions value.
`recommended@N` is the config's N-th search start point, complete over the searched keys as the
main job's trial N runs it (its own fraction); `start-points` names them all. The base
`bce-relations` (benchmarks/bases/) is the `recommended` of the results files measured before the
start points moved to the softmaxes.

Prints a Markdown table and writes benchmarks/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml
from _common import BENCH_DATA, RESULTS, ROOT, print_table, ray_local, write_json

REALWORLD = Path(os.environ.get("ALSOVIEW_REALWORLD_DIR", ROOT.parent / "shared" / "data" / "realworld"))
DATASETS = {
    "grocery": ("Grocery_2014/reviews.json.gz", "Grocery_2014/meta.json.gz"),
    "magazine": (
        "Magazine_Subscriptions/Magazine_Subscriptions_5.json.gz",
        "Magazine_Subscriptions/meta_Magazine_Subscriptions.json.gz",
    ),
    "gift_cards": ("Gift_Cards/Gift_Cards_5.json.gz", "Gift_Cards/meta_Gift_Cards.json.gz"),
}
# (epochs, patience) unless --epochs / --patience say otherwise: Magazine's 348 users make an
# epoch a few steps, so its models need many more epochs to converge.
EPOCHS = {"grocery": (20, 4), "magazine": (100, 10), "gift_cards": (100, 10), "generated": (20, 4)}
# `bce-relations`: the `recommended` of the results files measured before the start points moved
# to the softmaxes (benchmarks/bases/bce-relations.yaml says which).
BASES = {
    "design": [],
    "recommended": [ROOT / "configs" / "video_games.yaml"],
    "bce-relations": [ROOT / "benchmarks" / "bases" / "bce-relations.yaml"],
}
OVERLAYS = ROOT / "configs" / "variants"
# The rows of docs/quality.md's "What each part is worth" (the default run), on their base
DEFAULT_VARIANTS = (
    "design",
    "bce-relations+no-also-view",
    "bce-relations+softmax+no-also-view",
    "bce-relations",
    "bce-relations+harder-of-2",
    "bce-relations+softmax",
    "bce-relations+cooccurrence-head",
    "bce-relations+harder-of-2+cooccurrence-head",
    "bce-relations+softmax+cooccurrence-head",
    "bce-relations+softmax+recency",
    "bce-relations+softmax+recency+forward",
    "bce-relations+softmax+sequence",
)
REPORTED = (
    "test/full/ndcg@10",
    "test/full/hr@10",
    "test/sampled100/hr@10",
    "test/sampled100/ndcg@10",
    "test/hard/auc",
    "test/sampled99/hr@5",  # the leaderboards' protocol (ReChorus)
    "test/sampled99/ndcg@5",
)


def variant_parts(variant: str) -> tuple[str, int | None, list[str]]:
    """`base[@N]+overlay+...` -> (base, start point N or None, overlays)."""
    head, *overlays = variant.split("+")
    base, _, start = head.partition("@")
    if base not in BASES:
        raise SystemExit(f"unknown variant base {base!r} in {variant!r}: one of {', '.join(BASES)}")
    if start and not start.isdigit():
        raise SystemExit(f"{variant!r}: the start point after @ is a number (1 for the config's first)")
    known = sorted(path.stem for path in OVERLAYS.glob("*.yaml"))
    unknown = [name for name in overlays if name not in known]
    if unknown:
        raise SystemExit(f"unknown overlay {unknown[0]!r} in {variant!r}: one of {', '.join(known)} ({OVERLAYS})")
    return base, int(start) if start else None, overlays


def expand_variants(variants: list[str]) -> list[str]:
    """`start-points` -> every start point of configs/video_games.yaml (`recommended@1`, ...): the
    trials the main job runs first, the shipped settings; other names as they are."""
    from alsoview.config import load_config

    expanded = []
    for variant in variants:
        if variant == "start-points":
            points, _ = load_config(BASES["recommended"]).start_points()
            expanded += [f"recommended@{number}" for number in range(1, len(points) + 1)]
        else:
            expanded.append(variant)
    return expanded


def variant_files(variant: str) -> list[Path]:
    """The YAML files of a variant, in the order they apply: its base's, then its overlays."""
    base, _, overlays = variant_parts(variant)
    return [*BASES[base], *(OVERLAYS / f"{name}.yaml" for name in overlays)]


def start_point(config: Any, number: int, variant: str) -> dict[str, Any]:
    """The config's search start point `number` (1-based), complete over the searched keys: the
    settings the main job's trial number `number` runs with."""
    points, _ = config.start_points()
    if not 1 <= number <= len(points):
        raise SystemExit(f"{variant!r}: its config has start points 1 to {len(points)}")
    return points[number - 1]


def variant_config(variant: str, prepared: str, overrides: list[str]) -> Any:
    """The config of `variant` on the prepared dataset `prepared`, with `key=value` overrides; a
    `base@N` variant then takes start point N's settings, as that trial of a search does."""
    from alsoview.config import load_config, with_overrides

    dataset = [f"data.prepared_dir={prepared}", "data.reviews=[]", "data.meta=[]", "text.encoder=hashing"]
    config = load_config(variant_files(variant), [*dataset, *overrides])
    _, number, _ = variant_parts(variant)
    return config if number is None else with_overrides(config, start_point(config, number, variant))


def variant_fractions(variant: str, fractions: list[float]) -> list[float]:
    """The also-view fractions a variant runs at: a start point's, else the one its overlays set,
    else every fraction asked."""
    from alsoview.config import load_config

    base, number, _ = variant_parts(variant)
    files = variant_files(variant)
    if number is not None:
        return [float(start_point(load_config(files), number, variant)["sampling.also_view_fraction"])]
    sections = [yaml.safe_load(path.read_text()).get("sampling") or {} for path in files[len(BASES[base]) :]]
    pinned = [section["also_view_fraction"] for section in sections if "also_view_fraction" in section]
    return [float(pinned[-1])] if pinned else fractions


def run_label(variant: str, extra: Any) -> str:
    """A model run's `model` field: its variant and the --set overrides on top."""
    return " ".join([variant, *extra])


def prepared_dataset(name: str) -> str:
    """The real dataset `name`, or `generated` (the demo's embedded default: configs/default.yaml's
    generated data), prepared once (hashing text encoder: no model download, fast)."""
    from alsoview.config import load_config
    from alsoview.distributed.prepare import ensure_prepared

    out = BENCH_DATA / "real" / name
    if name == "generated":
        inputs = [f"data.generated_dir={BENCH_DATA / 'generated-default'}"]
        config = load_config(
            ROOT / "configs" / "default.yaml", [*inputs, f"data.prepared_dir={out}", "text.encoder=hashing"]
        )
        return ensure_prepared(config).data.prepared_dir
    reviews, meta = DATASETS[name]
    config = load_config(
        None,
        [
            f"data.reviews=[{REALWORLD / reviews}]",
            f"data.meta=[{REALWORLD / meta}]",
            f"data.prepared_dir={out}",
            "text.encoder=hashing",
        ],
    )
    return ensure_prepared(config).data.prepared_dir


def reference_rows(catalog: Any, cases: Any, dataset: str) -> list[dict[str, Any]]:
    """Baselines and peers on the test cases (deterministic given the data: one run each)."""
    import numpy as np

    from alsoview.evaluation.protocols import reference_scorers, score_rows, summarize

    references = reference_scorers(catalog.inputs_for("test"), seed=0)
    for name, why in references.skipped.items():
        print(f"[bench] {dataset}: peer {name} skipped: {why}", flush=True)
    rows = []
    for name, scorer in references.scorers.items():
        metrics = summarize(score_rows(scorer, cases, np.arange(len(cases.users))), "test")
        rows.append({"dataset": dataset, "model": name, "fraction": "-", **{m: metrics[m] for m in REPORTED}})
        print(f"[bench] {dataset} {name}: " + "  ".join(f"{m} {metrics[m]:.4f}" for m in REPORTED), flush=True)
    return rows


def model_run(
    catalog: Any,
    cases: Any,
    prepared: str,
    variant: str,
    fraction: float,
    seed: int,
    epochs: int,
    patience: int,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    import numpy as np

    from alsoview.distributed.evaluate import ModelFactory
    from alsoview.evaluation.protocols import score_rows, summarize
    from alsoview.training.trainer import fit_in_process

    config = variant_config(
        variant,
        prepared,
        [
            f"seed={seed}",
            f"sampling.also_view_fraction={fraction}",
            f"train.epochs={epochs}",
            f"train.patience={patience}",
            *extra,
        ],
    )
    begin = time.perf_counter()
    model, state = fit_in_process(catalog, config)
    scorer = ModelFactory(model.state_dict(), config, catalog.inputs_for("test"))("cpu")
    metrics = summarize(score_rows(scorer, cases, np.arange(len(cases.users))), "test")
    return {
        "model": run_label(variant, extra),
        "fraction": fraction,
        "seed": seed,
        "best_epoch": state.best_epoch,
        "valid": state.best_value,  # the early-stopping metric at the best epoch: what a search ranks by
        "epochs_run": len(state.history),
        "seconds": time.perf_counter() - begin,
        **{m: metrics[m] for m in REPORTED},
    }


def dataset_model_runs(
    args: argparse.Namespace,
    dataset: str,
    prepared: str,
    inputs: tuple[Any, Any],
    settings: tuple[int, int, tuple[str, ...]],
    done: dict[tuple[str, str, float, int], dict[str, Any]],
    written: Callable[[list[dict[str, Any]]], None],
) -> list[dict[str, Any]]:
    """Every (variant, fraction, seed) run of `dataset`, in the variants' order: those in `done`
    kept, the others run (`--jobs` at a time); `written` gets the runs finished so far after each."""
    specs = [
        (variant, fraction, seed)
        for variant in args.variants.split(",")
        for fraction in variant_fractions(variant, [float(f) for f in args.fractions.split(",")])
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    keys = {spec: (dataset, run_label(spec[0], args.set), *spec[1:]) for spec in specs}
    kept = {spec: done[keys[spec]] for spec in specs if keys[spec] in done}
    finished: dict[tuple[str, float, int], dict[str, Any]] = {}

    def record(spec: tuple[str, float, int], run: dict[str, Any]) -> None:
        finished[spec] = {"dataset": dataset, **run}
        written([finished[s] for s in specs if s in finished])  # in the variants' order, whatever finished first
        print(
            f"[bench] {dataset} {run['model']} f={spec[1]:g} seed {spec[2]}: best epoch {run['best_epoch']}  "
            + "  ".join(f"{m} {run[m]:.4f}" for m in REPORTED)
            + f"  ({run['seconds']:.0f}s{', kept from the file' if spec in kept else ''})",
            flush=True,
        )

    for spec, run in kept.items():
        record(spec, run)
    todo = [spec for spec in specs if spec not in kept]
    if args.jobs > 1 and len(todo) > 1:
        for spec, run in _runs_in_processes(prepared, todo, settings, args.jobs, args.threads):
            record(spec, run)
    else:
        for spec in todo:
            record(spec, model_run(*inputs, prepared, *spec, *settings))
    return [finished[spec] for spec in specs]


def _runs_in_processes(
    prepared: str,
    specs: list[tuple[str, float, int]],
    settings: tuple[int, int, tuple[str, ...]],
    jobs: int,
    threads: int,
) -> Iterator[tuple[tuple[str, float, int], dict[str, Any]]]:
    """(spec, result) of each model run as it finishes, `jobs` at a time in spawned processes of
    `threads` torch threads each. A run's numbers depend on its seed and settings only (as one
    process, Grocery's runs reproduce to the last digit), so they equal the sequential ones."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds Ray's threads
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_worker_model_run, prepared, *spec, *settings): spec for spec in specs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


@functools.cache
def _worker_inputs(prepared: str) -> tuple[Any, Any]:
    """A worker's catalog and test cases, loaded once per process (the cases are seeded: the same as the parent's)."""
    from alsoview.data.catalog import load_catalog
    from alsoview.evaluation.protocols import build_cases

    catalog = load_catalog(prepared)
    return catalog, build_cases(catalog, "test", seed=0)


def _worker_model_run(prepared: str, *spec_and_settings: Any) -> dict[str, Any]:
    return model_run(*_worker_inputs(prepared), prepared, *spec_and_settings)


def summary_rows(runs: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    rows = []
    for key in dict.fromkeys((r["model"], r["fraction"]) for r in runs):
        mine = [r for r in runs if (r["model"], r["fraction"]) == key]
        row: dict[str, Any] = {"dataset": dataset, "model": key[0], "fraction": key[1], "seeds": len(mine)}
        for m in REPORTED:
            values = [r[m] for r in mine]
            row[m] = f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"
        row["best epochs"] = ",".join(str(r["best_epoch"]) for r in mine)
        row["s/run"] = f"{statistics.mean(r['seconds'] for r in mine):.0f}"
        rows.append(row)
    return rows


# The metrics the peers are held to: full ranking first, and the leaderboards' sampled protocol
AGAINST_PEERS = ("test/full/ndcg@10", "test/sampled99/hr@5")


def peer_rows(runs: list[dict[str, Any]], references: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """Each variant's mean against the best peer's on AGAINST_PEERS (the best of popularity,
    co-occurrence, related, ALS and BPR per metric), and the variant a search would keep: the one
    with the best mean validation metric (what the main job's start points compete on)."""
    peers = [r for r in references if r["model"] != "random"]
    if not peers or not runs:
        return []
    best_peer = {m: max(peers, key=lambda r: r[m]) for m in AGAINST_PEERS}
    variants = list(dict.fromkeys(r["model"] for r in runs))
    valid = {v: statistics.mean(r["valid"] for r in runs if r["model"] == v and "valid" in r) for v in variants}
    picked = max(variants, key=lambda v: valid[v])
    rows = []
    for variant in variants:
        row: dict[str, Any] = {
            "dataset": dataset,
            "model": variant + (" (picked on validation)" if variant == picked else ""),
        }
        for m in AGAINST_PEERS:
            mine = statistics.mean(r[m] for r in runs if r["model"] == variant)
            peer = best_peer[m]
            row[m] = f"{mine:.4f} / {peer['model']} {peer[m]:.4f} = {mine / peer[m]:.2f}x"
        row["valid"] = f"{valid[variant]:.4f}"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="grocery,magazine")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated; see the docstring")
    parser.add_argument("--fractions", default="0", help="for variants that do not set their own")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed .. first-seed + seeds - 1")
    parser.add_argument("--epochs", type=int, help="default: the set's (grocery 20, magazine 100)")
    parser.add_argument("--patience", type=int, help="default: the set's (grocery 4, magazine 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each model run")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="model runs at once, each in a process of its own (results do not change; their seconds are not speeds)",
    )
    parser.add_argument("--out", default="real_quality", help="results file name under benchmarks/results/")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for every model run"
    )
    parser.add_argument(
        "--no-references", action="store_true", help="skip the baselines and peers (they do not change with --set)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the model runs already in --out's file (written after every run); same epochs, patience, --set",
    )
    args = parser.parse_args()
    args.variants = ",".join(expand_variants(args.variants.split(",")))
    done = finished_runs(args)

    import torch

    from alsoview.data.catalog import load_catalog
    from alsoview.evaluation.protocols import build_cases

    torch.set_num_threads(args.threads)
    ray_local()  # prepare runs Ray Data; training and scoring below run in this process
    table: list[dict[str, Any]] = []
    against: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for dataset in args.datasets.split(","):
        prepared = prepared_dataset(dataset)
        catalog = load_catalog(prepared)
        cases = build_cases(catalog, "test", seed=0)
        references = [] if args.no_references else reference_rows(catalog, cases, dataset)
        epochs, patience = args.epochs or EPOCHS[dataset][0], args.patience or EPOCHS[dataset][1]
        settings = (epochs, patience, tuple(args.set))
        written = functools.partial(_write_unfinished, args, list(runs), references)
        mine = dataset_model_runs(args, dataset, prepared, (catalog, cases), settings, done, written)
        runs += mine + references
        table += summary_rows(mine, dataset) + [{**r, **{m: f"{r[m]:.4f}" for m in REPORTED}} for r in references]
        against += peer_rows(mine, references, dataset)
    rendered = print_table(
        f"Quality on real data (test split, mean ± std over {args.seeds} seeds; "
        "up to each set's epochs, early stopping on valid/full/ndcg@10)",
        table,
        ["dataset", "model", "fraction", "seeds", *REPORTED, "best epochs", "s/run"],
    )
    if against:
        rendered += "\n" + print_table(
            "Against the best peer (mean over seeds / the best peer on that metric = ratio)",
            against,
            ["dataset", "model", *AGAINST_PEERS, "valid"],
        )
    _write(args, runs, rendered, complete=True)


def _arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k != "resume"}


def _write_unfinished(
    args: argparse.Namespace, before: list[dict[str, Any]], references: list[dict[str, Any]], mine: list[dict[str, Any]]
) -> None:
    _write(args, before + mine + references, table="(not finished)", complete=False)


def _write(args: argparse.Namespace, runs: list[dict[str, Any]], table: str, complete: bool) -> None:
    """The results file: after every model run (`complete` false) and at the end, so a long run
    that stops keeps what it measured and `--resume` goes on from there."""
    write_json(
        args.out,
        {
            "complete": complete,
            "runs": runs,
            "table": table,
            "args": _arguments(args),
            "command": "python benchmarks/real_quality.py "
            + " ".join(f"--{k} {v}" for k, v in _arguments(args).items()),
        },
    )


# The arguments a model run's result depends on beyond its key (dataset, model, fraction, seed)
RUN_SETTINGS = ("epochs", "patience", "set")


def finished_runs(args: argparse.Namespace) -> dict[tuple[str, str, float, int], dict[str, Any]]:
    """With --resume, the model runs in --out's file, by (dataset, model, fraction, seed). The
    file must come from the same epochs, patience and --set, or its runs would mix settings; other
    datasets, variants or seeds may be added."""
    path = RESULTS / f"{args.out}.json"
    if not args.resume or not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    theirs = {k: saved.get("args", {}).get(k) for k in RUN_SETTINGS}
    if theirs != {k: getattr(args, k) for k in RUN_SETTINGS}:
        raise SystemExit(f"--resume: {path} was written with other settings: {theirs}")
    return {(r["dataset"], r["model"], r["fraction"], r["seed"]): r for r in saved["runs"] if "seed" in r}


if __name__ == "__main__":
    main()
