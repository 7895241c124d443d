"""`alsoview` command line: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import NoReturn, Sequence

from alsoview.config import Config, check_plain_name, load_config, with_absolute_paths
from alsoview.errors import RunFailedError, UserError, internal_error_line, write_traceback
from alsoview.logs import configure as configure_logging
from alsoview.logs import tensorboard_hint, without_ansi
from alsoview.reporting.summary import (
    evaluate_lines,
    generate_lines,
    prepare_lines,
    recommendation_lines,
    similar_lines,
    train_lines,
    visitor_lines,
)

log = logging.getLogger("alsoview")


RUN_HELP = "a run directory, or a run name under the storage root's runs/ (a tuning run: its final model)"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        help="YAML config file (default: built-in defaults); repeat it to refine one file by the next",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.kcore=5 text.encoder=hashing"
    )


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes: which Ray to use, and how much to say."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        help="Ray cluster to join (as RAY_ADDRESS); default: a head started with `ray start` on this "
        "machine, else a private local instance",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", help="Ray's full output and debug lines (as ALSOVIEW_LOG=debug)"
    )
    return common


class _ShowDefaults(argparse.HelpFormatter):
    """--help names each option's default, where it has one: what leaving it out does is part of
    what it means. Flags and options without a default say nothing (argparse's own formatter would
    print "(default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if nothing or "%(default)" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line errors of the rest of the CLI (exit code 2, no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    from alsoview.version import __version__

    parser = _Parser(
        prog="alsoview",
        description="Recommenders that learn from also-viewed items as hard negatives, on Ray.",
        epilog="`alsoview COMMAND --help` lists a command's options and their defaults. "
        "Outputs go under the storage root, $ALSOVIEW_HOME (default ~/alsoview).",
    )
    parser.add_argument("--version", action="version", version=f"alsoview {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _common_options()

    def command(name: str, help: str, json_output: str | None = None) -> argparse.ArgumentParser:
        made = sub.add_parser(name, help=help, parents=[common], formatter_class=_ShowDefaults)
        if json_output:
            made.add_argument("--json", action="store_true", help=f"print {json_output} as JSON, not the summary")
        return made

    gen = command(
        "generate", help="write a synthetic dataset in the raw Amazon 2018 format", json_output="what was written"
    )
    gen.add_argument("--out", required=True, help="output directory")
    gen.add_argument("--users", type=int, default=2000, help="reviewers")
    gen.add_argument("--items", type=int, default=600, help="reviewable items (meta holds more)")
    gen.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")

    prep = command(
        "prepare",
        help="parse, clean, split and embed raw files into a prepared dataset",
        json_output="the rows kept and dropped",
    )
    prep.add_argument("--reviews", nargs="+", help="review files or globs (default: the generated dataset)")
    prep.add_argument("--meta", nargs="+", help="item metadata files or globs")
    prep.add_argument("--out", help="prepared dataset directory (default: data.prepared_dir)")
    prep.add_argument("--strict", action="store_true", help="a malformed input line is fatal")
    _add_config_args(prep)

    tr = command(
        "train",
        help="train a model with Ray Train (prepares the dataset first if needed)",
        json_output="every metric of the run (metrics.json)",
    )
    _add_config_args(tr)

    ev = command(
        "evaluate",
        help="score a trained run and the baselines on the named protocols",
        json_output="every scorer's metrics (evaluation.json)",
    )
    ev.add_argument("--run", required=True, help=RUN_HELP)
    ev.add_argument("--split", default="test", choices=("test", "valid"), help="which held-out item of each user")
    ev.add_argument("--max-users", type=int, help="evaluate a seeded sample of this many users")
    ev.add_argument("--actors", type=int, default=1, help="scoring actors in the Ray Data pool")

    co = command("compare", help="train one model per also-view fraction and seed, evaluate, plot")
    co.add_argument("--fractions", default="0,0.25,0.5,0.75,1", help="comma-separated also-view fractions")
    co.add_argument("--seeds", type=int, default=3, help="seeds per fraction (0, 1, ...)")
    co.add_argument("--name", default="compare", help="run directory name under train.runs_dir (same name resumes)")
    co.add_argument("--max-users", type=int, help="evaluate a seeded sample of this many test users")
    _add_config_args(co)

    rec = command("recommend", help="top-k items for a user (or many users) of a trained run")
    rec.add_argument("--run", required=True, help=RUN_HELP)
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a raw reviewerID")
    who.add_argument("--users-file", help="batch mode: a file with one reviewerID per line (Ray Data)")
    who.add_argument("--items", help="a visitor described by their games: comma-separated asins, oldest first")
    rec.add_argument("-k", type=int, default=10, help="items per user")
    rec.add_argument("--out", help="batch mode: output Parquet file (default: <run>/recommendations.parquet)")
    rec.add_argument("--actors", type=int, default=1, help="batch mode: scoring actors in the Ray Data pool")

    sim = command("similar", help="the games most like one game: by the model's vectors, co-occurrence or also-view")
    sim.add_argument("--run", required=True, help=RUN_HELP)
    sim.add_argument("--asin", required=True, help="the item's asin")
    sim.add_argument("-k", type=int, default=10, help="items to show")
    sim.add_argument(
        "--by", default="vectors", choices=("vectors", "cooccurrence", "also_view"), help="what makes items alike"
    )

    srv = command("serve", help="answer recommendations over HTTP with Ray Serve (POST /recommend, /similar)")
    srv.add_argument("--run", required=True, help=RUN_HELP + "; again with another run: swap models, no downtime")
    srv.add_argument("--host", default="127.0.0.1", help="where Serve's HTTP proxy listens (it has no authentication)")
    srv.add_argument("--port", type=int, default=8000, help="HTTP port")
    srv.add_argument("--replicas", type=int, default=1, help="replicas of the model, each with its own copy")
    srv.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs each replica reserves")
    srv.add_argument("--max-batch-size", type=int, default=32, help="requests scored together (1: no batching)")
    srv.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    srv.add_argument("--ready-timeout", type=float, default=300.0, help="seconds the replicas may take to answer")
    srv.add_argument(
        "--write-config", metavar="FILE", help="write the Serve config file (for `serve deploy`) instead of serving"
    )

    exp = command("export", help="item and user vectors of a run as Parquet, for a vector database")
    exp.add_argument("--run", required=True, help=RUN_HELP)
    exp.add_argument("--out", required=True, help="output directory (new, empty, or an earlier export)")

    tu = command("tune", help="search the also-view / random balance with Ray Tune (prepares first if needed)")
    tu.add_argument(
        "--no-final",
        action="store_true",
        help="stop after the search: no final model in best/, no test evaluation, no report.md",
    )
    _add_config_args(tu)
    return parser


def _config_from(args: argparse.Namespace) -> Config:
    config = load_config(args.config, args.overrides)
    data = config.data
    if getattr(args, "reviews", None):
        data = dataclasses.replace(data, reviews=list(args.reviews), meta=list(args.meta or []))
    elif getattr(args, "meta", None):
        raise UserError("--meta given without --reviews")
    if getattr(args, "out", None):
        data = dataclasses.replace(data, prepared_dir=args.out)
    if getattr(args, "strict", False):
        data = dataclasses.replace(data, strict=True)
    config = dataclasses.replace(config, data=data)
    config.validate()
    config = with_absolute_paths(config)
    log.info(
        "storage: %s (relative data and run paths resolve here; set ALSOVIEW_HOME or storage= to move it)",
        config.storage,
    )
    return config


def cmd_generate(args: argparse.Namespace) -> int:
    from alsoview.data.synthetic import generate

    summary = generate(args.out, users=args.users, items=args.items, seed=args.seed)
    if args.json:
        print(json.dumps(dataclasses.asdict(summary), indent=2, default=str))
        return 0
    _print_lines(
        generate_lines(
            summary.reviews_path.parent,
            summary.users,
            summary.reviewable_items,
            summary.reviews,
            summary.meta_lines,
            summary.seconds,
        )
    )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from alsoview.distributed.prepare import prepare, with_default_inputs

    config = with_default_inputs(_config_from(args))
    result = prepare(config)
    manifest = result.manifest
    if args.json:
        keys = ("rows", "counts", "dropped", "text_encoder")
        print(json.dumps({key: manifest[key] for key in keys}, indent=2))
        return 0
    _print_lines(prepare_lines(Path(result.out_dir), manifest))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from alsoview.distributed.prepare import ensure_prepared
    from alsoview.distributed.train import train

    config = ensure_prepared(_config_from(args))
    result = train(config)
    if args.json:
        print(json.dumps(result.metrics, indent=2))
        return 0
    references = validation_references(config)
    best_row = best_history_row(result.run_dir, result.metrics)
    _print_lines(train_lines(result.run_dir, config.train.run_name, result.metrics, best_row, references))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from alsoview.distributed.evaluate import evaluate_run
    from alsoview.training.checkpoint import find_run

    run = find_run(args.run)
    results = evaluate_run(run, args.split, args.max_users, actors=args.actors)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    _print_lines(evaluate_lines(run, args.run, results, args.split))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from alsoview.distributed.compare import compare, parse_fractions
    from alsoview.distributed.prepare import ensure_prepared

    fractions = parse_fractions(args.fractions)
    check_plain_name(args.name, "--name")
    config = ensure_prepared(_config_from(args))
    result = compare(config, fractions, args.seeds, args.name, args.max_users)
    print((result.run_dir / "comparison.md").read_text())
    print(f"written: {result.run_dir}/comparison.md, comparison.json, comparison.png")
    print(tensorboard_hint(result.run_dir))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:

    from alsoview.distributed.recommend import Recommender, read_user_ids, recommend_batch
    from alsoview.training.checkpoint import find_run

    run = find_run(args.run)
    if args.users_file:
        users = read_user_ids(args.users_file)
        out = args.out or str(run / "recommendations.parquet")
        rows = recommend_batch(run, users, out, args.k, args.actors)
        print(f"{rows} recommendations for {len(users)} users written to {out}")
        unknown = _fallback_users(out)
        if unknown:
            print(
                f"{unknown} of them are not users of this run's data: their rows are the most popular items "
                "(source 'popularity (unknown user)' in the file)"
            )
        return 0
    recommender = Recommender.from_run(run)
    if args.items is not None:
        asins = [asin.strip() for asin in args.items.split(",") if asin.strip()]
        frame, fallback = recommender.recommend_items(asins, args.k)
        _print_lines(visitor_lines(asins, frame, fallback))
        return 0
    frame = recommender.recommend([args.user], args.k)
    _print_lines(recommendation_lines(args.user, frame))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from alsoview.distributed import serve
    from alsoview.distributed.runtime import cluster_to_join

    settings = serve.ServeSettings(
        args.host,
        args.port,
        args.replicas,
        args.cpus_per_replica,
        args.max_batch_size,
        args.batch_wait_ms,
        args.ready_timeout,
    )
    if args.write_config:
        written = serve.write_serve_config(args.run, settings, Path(args.write_config))
        print(f"Serve config for {written['run']} written to {args.write_config}: serve deploy {args.write_config}")
        return 0
    on_cluster = cluster_to_join()[0] is not None  # else this process's private instance holds Serve
    described = serve.deploy(args.run, settings)
    url = serve.base_url(settings)
    print(f"serving {described['run']} (trained {described['trained'][:19]}) at {url}")
    print(f'  POST {url}/recommend  {{"user_id": "..."}} or {{"items": ["asin", ...]}}, "k": 10')
    print(f'  POST {url}/similar    {{"asin": "...", "k": 10}}      GET {url}/healthz, {url}/model')
    if on_cluster:
        print("it runs on the cluster: `alsoview serve --run OTHER` swaps models; `serve shutdown` stops it")
        return 0
    print("Ctrl-C stops it", flush=True)
    serve.block_until_interrupted()
    serve.shutdown()
    print("stopped")
    return 0


def _fallback_users(recommendations: str) -> int:
    """How many users of a batch file got popularity rows because the run does not know them."""
    import pandas as pd

    frame = pd.read_parquet(recommendations, columns=["reviewer_id", "source"])
    return int(frame.loc[frame["source"] != "model", "reviewer_id"].nunique())


def validation_references(config: Config) -> dict[str, dict[str, float]]:
    """The cheap references on the run's own validation users: the bar of the train verdict."""
    from alsoview.data.catalog import load_catalog
    from alsoview.evaluation.validation import reference_validation, validation_set

    catalog = load_catalog(config.data.prepared_dir)
    return reference_validation(catalog, validation_set(catalog, config.seed, config.train.valid_users), config.seed)


def best_history_row(run_dir: Path, metrics: dict) -> dict[str, float]:
    """history.csv's row of the best epoch (the epoch model.pt holds)."""
    import pandas as pd

    from alsoview.training.checkpoint import HISTORY_FILE

    history = pd.read_csv(run_dir / HISTORY_FILE)
    best = history[history["epoch"] == metrics.get("best/epoch", -1)]
    return best.iloc[0].to_dict() if len(best) else {}


def cmd_similar(args: argparse.Namespace) -> int:
    from alsoview.distributed.recommend import Recommender

    recommender = Recommender.from_run(args.run)
    frame = recommender.similar(args.asin, args.k, args.by)
    title = recommender.catalog.item_title[recommender.item_index(args.asin)]
    _print_lines(similar_lines(args.asin, str(title), frame))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from alsoview.distributed.recommend import Recommender

    record = Recommender.from_run(args.run).export(args.out)
    print(f"{record['items']:,} item and {record['users']:,} user vectors ({record['dim']} dims) written to {args.out}")
    print(f"  items.parquet, users.parquet, vectors.json; item vectors: {record['item_vectors']}")
    return 0


def _print_lines(lines: list[str]) -> None:
    print("\n".join(lines))


def cmd_tune(args: argparse.Namespace) -> int:
    from alsoview.distributed.prepare import ensure_prepared
    from alsoview.distributed.tune import tune

    config = _config_from(args)
    if args.no_final:
        config = dataclasses.replace(config, tune=dataclasses.replace(config.tune, final=False))
    start = time.perf_counter()
    config = ensure_prepared(config)
    result = tune(config, stage_seconds={"prepare (or reuse) the dataset": time.perf_counter() - start})
    best = result.best
    print(
        f"trials: {best['trials']} ({best['trials_completed']} completed, {best['trials_stopped_early']} stopped "
        f"early by ASHA, {best['trials_failed']} failed)"
    )
    print(f"best {best['metric']} = {best['value']:.4f} with:")
    for key, value in best["params"].items():
        print(f"  {key} = {value}")
    print(f"tuning run: {result.run_dir}  (trials.csv, best.json, balance.png)")
    print(tensorboard_hint(result.run_dir))
    if result.final is not None:
        from alsoview.reporting.tuning import headline_verdict

        print(headline_verdict(result.final.evaluation).replace("**", ""))
        print(f"final model: {result.final.best_dir}  (alsoview recommend --run {result.final.best_dir} --user ID)")
        print(f"report: {result.final.report}")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "prepare": cmd_prepare,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "recommend": cmd_recommend,
    "similar": cmd_similar,
    "export": cmd_export,
    "serve": cmd_serve,
    "tune": cmd_tune,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user mistakes end with one line on stderr and exit code 2, failed runs with
    one line and exit code 1 (details in the run directory), an interrupt with 130, and anything
    else (a bug, an unforeseen failure) with one line naming the file that holds its traceback,
    exit code 1."""
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed its one line (or --help)
        return int(stop.code or 0)
    configure_logging(args.verbose)
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address  # init_ray joins it, as Ray's own tools would
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        _error_line(f"error: {exc}")
        return 2
    except RunFailedError as exc:
        _error_line(f"failed: {exc}")
        return 1
    except KeyboardInterrupt as exc:
        _error_line(f"interrupted{f': {exc}' if str(exc) else ''}")
        return 130
    except Exception as exc:  # not the project's own: one line; the traceback goes to a file
        _error_line(internal_error_line(exc, write_traceback(exc, _command_line(argv))))
        return 1


def _error_line(text: str) -> None:
    """The one line a failed command ends with, on stderr: plain text, even when the message
    came from Ray with its colour codes."""
    print(f"alsoview: {without_ansi(text)}", file=sys.stderr)


def _command_line(argv: Sequence[str] | None) -> str:
    return " ".join(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
