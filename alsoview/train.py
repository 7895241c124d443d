"""Training: the per-worker loop and the TorchTrainer that runs it.

Each epoch, every worker iterates its Ray Data feed (`feed.py`: its share of the training
positives with fresh negatives for that epoch) and cuts the mixed blocks into batches.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from alsoview.catalog import Catalog, load_catalog
from alsoview.config import Config, save_config
from alsoview.errors import UserError
from alsoview.feed import EPOCH_ORDER_KEY, EpochFeeder, block_sizes, cached_catalog, steps_per_epoch
from alsoview.metrics import pairwise_auc
from alsoview.sampling import epoch_rng, mix_negatives

log = logging.getLogger("alsoview")

CHECKPOINT_FILE = "checkpoint.pt"
_VALIDATION_KEY = EPOCH_ORDER_KEY + 1  # epoch_rng key of the fixed validation negatives


# ---------------------------------------------------------------- data: positives and validation


@dataclass(frozen=True)
class ValidationPairs:
    """Each valid positive with one random negative, and (where possible) one also-view negative."""

    users: np.ndarray
    positives: np.ndarray
    random_negatives: np.ndarray
    hard_users: np.ndarray
    hard_positives: np.ndarray
    hard_negatives: np.ndarray


def validation_pairs(catalog: Catalog, seed: int) -> ValidationPairs:
    """Fixed negatives for the validation split (the same every epoch, so curves are comparable)."""
    users, items = catalog.valid.users, catalog.valid.items
    rng = epoch_rng(seed, 0, _VALIDATION_KEY)
    random_cols, _ = mix_negatives(users, items, catalog.sampling, negatives_per_positive=1,
                                   also_view_fraction=0.0, rng=rng)
    hard_cols, _ = mix_negatives(users, items, catalog.sampling, negatives_per_positive=1,
                                 also_view_fraction=1.0, rng=rng)
    n = len(users)
    hard = hard_cols["is_hard"][n:]
    return ValidationPairs(
        users=users, positives=items, random_negatives=random_cols["item"][n:],
        hard_users=users[hard], hard_positives=items[hard], hard_negatives=hard_cols["item"][n:][hard],
    )


# ---------------------------------------------------------------- the epoch pipeline (Ray Data)


def fixed_size_batches(blocks: Iterable[dict[str, torch.Tensor]], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Cut a stream of column blocks into batches of exactly `batch_size` rows (the last may be
    shorter), carrying a block's remainder into the next one. Slices are views: no copies."""
    carry: dict[str, torch.Tensor] | None = None
    for block in blocks:
        if carry is not None:
            block = {name: torch.cat([carry[name], column]) for name, column in block.items()}
        rows = len(next(iter(block.values())))
        full = rows - rows % batch_size
        for start in range(0, full, batch_size):
            yield {name: column[start:start + batch_size] for name, column in block.items()}
        carry = {name: column[full:] for name, column in block.items()} if full < rows else None
    if carry is not None:
        yield carry


# ---------------------------------------------------------------- model, validation, checkpoints


def build_model(catalog: Catalog, config: Config) -> torch.nn.Module:
    from alsoview.model import AlsoViewMLP

    return AlsoViewMLP(
        n_users=catalog.n_users, n_items=catalog.n_items, n_brands=catalog.n_brands, text_dim=catalog.text_dim,
        # copies: the catalog's arrays are read-only views into Ray's object store
        item_brand=torch.tensor(catalog.item_brand), item_price=torch.tensor(catalog.item_price),
        item_price_missing=torch.tensor(catalog.item_price_missing),
        item_text=torch.tensor(catalog.item_text), config=config.model,
    )


def vocabulary(catalog: Catalog) -> dict[str, int]:
    return {"n_users": catalog.n_users, "n_items": catalog.n_items, "n_brands": catalog.n_brands,
            "text_dim": catalog.text_dim}


@torch.no_grad()
def score_pairs(model: torch.nn.Module, users: np.ndarray, items: np.ndarray, device: torch.device,
                batch_size: int = 8192) -> np.ndarray:
    """Model logits for aligned (user, item) arrays, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(users), batch_size):
        u = torch.as_tensor(users[start:start + batch_size], dtype=torch.long, device=device)
        i = torch.as_tensor(items[start:start + batch_size], dtype=torch.long, device=device)
        out.append(model(u, i).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def validate(model: torch.nn.Module, pairs: ValidationPairs, device: torch.device) -> dict[str, float]:
    """valid/auc against a random item, valid/hard_auc against an also-view item of the same positive."""
    auc = pairwise_auc(score_pairs(model, pairs.users, pairs.positives, device),
                       score_pairs(model, pairs.users, pairs.random_negatives, device))
    hard_auc = pairwise_auc(score_pairs(model, pairs.hard_users, pairs.hard_positives, device),
                            score_pairs(model, pairs.hard_users, pairs.hard_negatives, device))
    values = [v for v in (auc, hard_auc) if not math.isnan(v)]
    return {"valid/auc": auc, "valid/hard_auc": hard_auc,
            "valid/mean_auc": float(np.mean(values)) if values else float("nan"),
            "valid/hard_pairs": float(len(pairs.hard_users))}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _state_to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@dataclass
class LoopState:
    """What a resumed run needs besides the weights: where it was and how early stopping stood."""

    epoch: int = -1  # last finished epoch
    best_value: float = -math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    best_model_state: dict[str, torch.Tensor] | None = None
    resumed_from_epoch: int | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # every epoch's metrics, resumes included


def latest_checkpoint_dir(run_storage: str) -> Path | None:
    """The newest complete checkpoint Ray Train wrote for a run (its folders sort by time)."""
    folder = Path(run_storage)
    if not folder.is_dir():
        return None
    complete = [p for p in sorted(folder.glob("checkpoint_*")) if (p / CHECKPOINT_FILE).is_file()]
    return complete[-1] if complete else None


def _load_checkpoint(model: torch.nn.Module, optimizer: Any, expected_vocab: dict[str, int],
                     run_storage: str) -> LoopState:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    else:
        # Ray Train restores a run by name only when its controller recorded the run; after a
        # killed driver it may not, so the newest complete checkpoint on disk is used instead.
        folder = latest_checkpoint_dir(run_storage)
        if folder is None:
            return LoopState()
        print(f"[alsoview] Ray Train did not restore this run; resuming from {folder}", flush=True)
        saved = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    if saved["vocabulary"] != expected_vocab:
        raise UserError(f"the checkpoint was trained on another dataset ({saved['vocabulary']} vs {expected_vocab}); "
                        f"use another train.run_name")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    state = LoopState(**{k: saved["loop"][k] for k in ("epoch", "best_value", "best_epoch", "epochs_without_improvement")})
    state.best_model_state = saved["best_model"]
    state.history = saved["history"]
    state.resumed_from_epoch = state.epoch
    return state


def _save_checkpoint(model: torch.nn.Module, optimizer: Any, state: LoopState, config: Config,
                     vocab: dict[str, int], folder: str) -> None:
    torch.save({
        "model": _state_to_cpu(_unwrap(model).state_dict()),
        "optimizer": optimizer.state_dict(),
        "best_model": state.best_model_state,
        "history": state.history,
        "loop": {k: getattr(state, k) for k in ("epoch", "best_value", "best_epoch", "epochs_without_improvement")},
        "vocabulary": vocab,
        "config": config.to_dict(),
    }, Path(folder) / CHECKPOINT_FILE)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum per-worker numbers across the worker group (identity on a single worker)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor.cpu().tolist()


# ---------------------------------------------------------------- the loop on each worker


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DDP model, per-epoch mixing pipeline, validation, checkpoints."""
    import ray.data
    import ray.train
    import ray.train.torch

    from alsoview.model import build_optimizer

    config: Config = loop_config["config"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(loop_config["torch_threads"])
    torch.manual_seed(config.seed)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # reproducible batch order
    ray.data.DataContext.get_current().enable_progress_bars = False

    catalog = cached_catalog(loop_config["catalog_ref"])
    vocab = vocabulary(catalog)
    device = ray.train.torch.get_device()
    model = build_model(catalog, config)
    optimizer = build_optimizer(model, config.train.learning_rate, config.model.sparse_embeddings)
    state = _load_checkpoint(model, optimizer, vocab, loop_config["run_storage"])
    if state.resumed_from_epoch is not None and rank == 0:
        print(f"[alsoview] resumed from the checkpoint of epoch {state.resumed_from_epoch}", flush=True)
    model = ray.train.torch.prepare_model(model)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    sizes = block_sizes(len(catalog.train), config.sampling.block_rows)
    worker_batch = config.train.batch_size // world
    samples_per_positive = 1 + config.sampling.negatives_per_positive
    pairs: ValidationPairs = loop_config["validation"]
    metric = config.train.early_stopping_metric

    if state.epoch + 1 >= config.train.epochs and state.history:
        # Nothing left to train (e.g. the driver died after the last epoch): report the final
        # state again, so a restored Tune experiment records this trial's result and checkpoint.
        if rank == 0:
            print(f"[alsoview] run already trained to epoch {state.epoch}: raise train.epochs to continue it, "
                  f"or use another train.run_name", flush=True)
        _report(dict(state.history[-1]), model, optimizer, state, config, vocab, rank)
        return
    # The feed runs one epoch ahead in its own actor (see EpochFeeder for why); "DEFAULT" keeps
    # it and its Ray Data tasks out of this worker's placement group.
    feeder = ray.remote(num_cpus=0, scheduling_strategy="DEFAULT")(EpochFeeder).remote(
        config, loop_config["catalog_ref"], len(sizes), rank, world)
    try:
        next_epoch_samples = feeder.materialize.remote(state.epoch + 1)
        for epoch in range(state.epoch + 1, config.train.epochs):
            start = time.perf_counter()
            steps = steps_per_epoch(sizes, config.seed, epoch, world, samples_per_positive, worker_batch)
            dataset = ray.get(next_epoch_samples)
            if epoch + 1 < config.train.epochs:
                next_epoch_samples = feeder.materialize.remote(epoch + 1)
            data_wait = time.perf_counter() - start  # time this worker waited for the feed
            model.train()
            loss_sum = seen = hard = negatives = 0.0
            # Whole mixed blocks cross from Ray Data and are cut into batches here: the same rows in
            # the same order as Ray's own batching, without its per-batch cost (measured in benchmarks/).
            blocks_out = dataset.iter_torch_batches(
                batch_size=None, device=device, prefetch_batches=2,
                dtypes={"user": torch.long, "item": torch.long, "label": torch.float32, "is_hard": torch.float32})
            batches = fixed_size_batches(blocks_out, worker_batch)
            for _ in range(steps):
                waited = time.perf_counter()
                batch = next(batches, None)
                data_wait += time.perf_counter() - waited
                if batch is None:
                    break
                logits = model(batch["user"], batch["item"])
                loss = loss_fn(logits, batch["label"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                size = len(batch["label"])
                loss_sum += loss.item() * size
                seen += size
                hard += float(batch["is_hard"].sum())
                negatives += float(size - batch["label"].sum())
            train_seconds = time.perf_counter() - start
            loss_sum, seen, hard, negatives = _all_reduce_sum([loss_sum, seen, hard, negatives], device)

            # Every rank validates on the whole (small) split: identical weights give identical
            # numbers, so every rank takes the same early-stopping decision without a broadcast.
            metrics = validate(_unwrap(model), pairs, device)
            metrics.update({
                "epoch": epoch,
                "train/loss": loss_sum / max(seen, 1.0),
                "train/samples": seen,
                "valid/hit_share_hard": hard / max(negatives, 1.0),  # realised share of also-view negatives
                "train/epoch_seconds": time.perf_counter() - start,  # training and validation
                "train/seconds": train_seconds,  # this worker's data pipeline and steps
                "train/samples_per_second": seen / train_seconds,  # all workers' samples
                "train/data_wait_seconds": data_wait,  # this worker's; near 0 when the feed keeps up
            })
            value = metrics[metric]
            state.epoch = epoch
            if value > state.best_value:
                state.best_value, state.best_epoch, state.epochs_without_improvement = value, epoch, 0
                state.best_model_state = _state_to_cpu(_unwrap(model).state_dict())
            else:
                state.epochs_without_improvement += 1
            stop = 0 < config.train.patience <= state.epochs_without_improvement
            metrics.update({"best/epoch": state.best_epoch, f"best/{metric}": state.best_value, "early_stopped": stop,
                            "resumed_from_epoch": -1 if state.resumed_from_epoch is None else state.resumed_from_epoch})
            state.history.append(dict(metrics))
            _report(metrics, model, optimizer, state, config, vocab, rank)
            if stop:
                break
    finally:
        ray.kill(feeder)  # frees the epoch it may have mixed ahead


def _report(metrics: dict[str, Any], model: torch.nn.Module, optimizer: Any, state: LoopState, config: Config,
            vocab: dict[str, int], rank: int) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (the others would only duplicate it)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    print("[alsoview] epoch {epoch}: loss {loss:.4f}  valid/auc {auc:.4f}  valid/hard_auc {hard:.4f}  "
          "hard share {share:.3f}  ({secs:.1f}s)".format(
              epoch=metrics["epoch"], loss=metrics["train/loss"], auc=metrics["valid/auc"],
              hard=metrics["valid/hard_auc"], share=metrics["valid/hit_share_hard"],
              secs=metrics["train/epoch_seconds"]), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        _save_checkpoint(model, optimizer, state, config, vocab, folder)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


# ---------------------------------------------------------------- the driver


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]


def resolve_resources(config: Config, cluster: dict[str, float]) -> tuple[bool, float, int]:
    """(use_gpu, CPUs per worker, torch threads per worker) for this cluster, with Ray Data's share left free."""
    gpus = cluster.get("GPU", 0)
    use_gpu = gpus > 0 if config.train.use_gpu == "auto" else bool(config.train.use_gpu)
    if use_gpu and gpus < config.train.num_workers:
        raise UserError(f"train.use_gpu needs {config.train.num_workers} GPUs, the cluster has {gpus:g}")
    cpus = cluster.get("CPU", 1)
    per_worker = config.train.cpus_per_worker
    if per_worker is None:
        spare_for_data = max(config.sampling.cpus_per_task, 0.25 * cpus)
        per_worker = min(1.0 if use_gpu else max(1.0, (cpus - spare_for_data) / config.train.num_workers),
                         (cpus - spare_for_data) / config.train.num_workers)
    if per_worker * config.train.num_workers + config.sampling.cpus_per_task > cpus + 1e-9:
        raise UserError(f"{config.train.num_workers} workers x {per_worker:g} CPUs + {config.sampling.cpus_per_task:g} "
                        f"for Ray Data exceed the cluster's {cpus:g} CPUs")
    if per_worker <= 0:
        raise UserError(f"the cluster's {cpus:g} CPUs leave nothing for {config.train.num_workers} workers")
    return use_gpu, round(per_worker, 3), max(1, int(per_worker))


def with_absolute_paths(config: Config) -> Config:
    """Paths as absolute ones, so a run's saved config still finds its dataset from anywhere."""
    data = dataclasses.replace(config.data, prepared_dir=str(Path(config.data.prepared_dir).resolve()))
    train = dataclasses.replace(config.train, runs_dir=str(Path(config.train.runs_dir).resolve()))
    return dataclasses.replace(config, data=data, train=train)


def run_dir_of(config: Config) -> Path:
    return Path(config.train.runs_dir).resolve() / config.train.run_name


def build_trainer(config: Config, catalog: Catalog, callbacks: list | None = None, run_name: str | None = None,
                  storage_path: str | None = None, budget: dict[str, float] | None = None) -> Any:
    """The TorchTrainer for `config` (also used by Tune, which builds one per trial).

    `budget` is the share of the cluster this run may plan with (a Tune trial's share); by
    default the whole cluster.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu, cpus_per_worker, threads = resolve_resources(config, budget or ray.cluster_resources())
    if config.model.sparse_embeddings and config.train.num_workers > 1:
        # DDP all-reduces sparse gradients with gloo only (not NCCL), and on torch 2.13 CPU this
        # model's sparse all-reduce corrupted the heap within 2,000 steps (SIGSEGV in gloo's ring),
        # reproduced without Ray and with torch's own SparseAdam: refused, not left to crash.
        raise UserError("model.sparse_embeddings=true needs train.num_workers=1: multi-worker training "
                        "all-reduces sparse gradients, which crashes in torch's gloo backend; use dense "
                        "embeddings (the default) for several workers")
    blocks = block_sizes(len(catalog.train), config.sampling.block_rows)
    if len(blocks) < config.train.num_workers:
        raise UserError(f"{len(catalog.train)} training positives make {len(blocks)} blocks of "
                        f"sampling.block_rows={config.sampling.block_rows}: fewer than train.num_workers="
                        f"{config.train.num_workers}; lower sampling.block_rows")
    name = run_name or config.train.run_name
    storage = storage_path or str(Path(config.train.runs_dir).resolve())
    loop_config = {
        "run_storage": str(Path(storage) / name),
        "config": config,
        "catalog_ref": [ray.put(catalog)],
        "validation": validation_pairs(catalog, config.seed),
        "torch_threads": threads,
    }
    log.info("training: %d workers x %g CPUs%s, %d threads each; %d positives in %d blocks, k=%d, also-view share %.2f",
             config.train.num_workers, cpus_per_worker, " + 1 GPU" if use_gpu else "", threads, len(catalog.train),
             len(blocks), config.sampling.negatives_per_positive, config.sampling.also_view_fraction)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=config.train.num_to_keep),
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            callbacks=callbacks,
        ),
    )


def train(config: Config, catalog: Catalog | None = None) -> TrainResult:
    """Fit the model with Ray Train; writes config.yaml, metrics.json, history.csv and model.pt to the run dir."""
    from alsoview.runtime import init_ray

    config = with_absolute_paths(config)
    catalog = catalog or load_catalog(config.data.prepared_dir)
    log.info(init_ray())
    run_dir = run_dir_of(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    try:
        result = build_trainer(config, catalog).fit()
    except Exception as exc:
        raise _user_error_from_workers(exc) or exc
    metrics = finish_run(run_dir, result, config, catalog)
    return TrainResult(run_dir, metrics)


def _user_error_from_workers(exc: Exception) -> UserError | None:
    """A UserError raised on a worker (e.g. a checkpoint from another dataset) reaches the user as one line."""
    for failure in getattr(exc, "worker_failures", {}).values():
        cause = failure
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__ or getattr(cause, "cause", None)
        if isinstance(cause, UserError):
            return UserError(str(cause))
    return None


def finish_run(run_dir: Path, result: Any, config: Config, catalog: Catalog) -> dict[str, Any]:
    """Write the run's outputs from Ray Train's result: final metrics, history, best weights."""
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint; see the worker logs under {run_dir}")
    with result.checkpoint.as_directory() as folder:
        saved = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    torch.save({"model": saved["best_model"], "vocabulary": saved["vocabulary"], "config": saved["config"],
                "epoch": saved["loop"]["best_epoch"]}, run_dir / "model.pt")
    # The history travels in the checkpoint: Ray's metrics_dataframe only holds the kept checkpoints.
    history = saved["history"]
    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    last = {k: _plain(v) for k, v in history[-1].items()}
    metrics = {
        **{k: v for k, v in last.items() if k.startswith(("valid/", "train/", "best/"))},
        "epochs_total": len(history),
        "last_epoch": last["epoch"],
        "resumed_from_epoch": last["resumed_from_epoch"],
        "early_stopped": bool(last.get("early_stopped", False)),
        "model": "model.pt holds the weights of best/epoch",
        "dataset": str(Path(config.data.prepared_dir).resolve()),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def load_saved_model(run_dir: str | Path) -> dict[str, Any]:
    """model.pt of a finished run: best weights, vocabulary, the run's config (as a dict)."""
    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise UserError(f"no trained model in {run_dir} (missing model.pt); run `alsoview train` first")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_trained_model(run_dir: str | Path, catalog: Catalog) -> torch.nn.Module:
    """The best weights of a finished run, as an eval-mode model on the CPU."""
    saved = load_saved_model(run_dir)
    if saved["vocabulary"] != vocabulary(catalog):
        raise UserError(f"{run_dir}/model.pt was trained on another prepared dataset")
    model = build_model(catalog, _config_from_dict(saved["config"]))
    model.load_state_dict(saved["model"])
    return model.eval()


def _config_from_dict(raw: dict[str, Any]) -> Config:
    from alsoview.config import _build

    return _build(Config, raw, prefix="")
