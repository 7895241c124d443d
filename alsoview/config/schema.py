"""The typed config: one dataclass per YAML section, each with its defaults and `validate()`.

Every value's type and allowed range is here; an out-of-range value is a user mistake that
ends the run with one clear line (UserError). Also the choice lists code elsewhere acts on
(`TEXT_ENCODERS`, `RANDOM_POOLS`, `VALIDATION_METRICS`) and the rule for run and experiment names.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from alsoview.config.bounds import check_bounds
from alsoview.config.keys import current_value, optional_part
from alsoview.config.names import CPUS_RULE, MAX_CPUS, PLAIN_NAME_RULE, is_plain_name
from alsoview.config.search_space import (
    _default_search_space,
    check_search_spec,
    effective_search_space,
    flatten_search_space,
    refine_search_space,
    resolve_start_points,
)
from alsoview.data.text import TEXT_ENCODERS, TextEncoder
from alsoview.errors import UserError, check_setting
from alsoview.model.config import ModelConfig
from alsoview.model.part import Part, has_settings
from alsoview.sampling.mixing import RANDOM_POOLS, RandomPool

# Each set of choices is one Literal: the config checks values against it, and the code that acts
# on a choice (text.py, sampling.py) imports the same tuple.
Loss = Literal["bce", "bpr", "softmax", "full_softmax"]  # training/losses.py
ValidationMetric = Literal[  # every epoch's validation metrics (validation.py)
    "valid/full/ndcg@10",
    "valid/full/hr@10",
    "valid/full/mrr",
    "valid/sampled100/ndcg@10",
    "valid/sampled100/hr@10",
    "valid/auc",
    "valid/hard_auc",
    "valid/mean_auc",
]
LOSSES: tuple[str, ...] = typing.get_args(Loss)
# The losses that can add the BPR term over also-view negatives (train.hard_negative_weight).
HARD_TERM_LOSSES = ("softmax", "full_softmax")
# What early stopping and tuning can maximise.
VALIDATION_METRICS: tuple[str, ...] = typing.get_args(ValidationMetric)
WandbMode = Literal["offline", "online"]  # offline: W&B writes local files only (`wandb sync` uploads them)
WANDB_MODES: tuple[str, ...] = typing.get_args(WandbMode)
# W&B refuses these in a project name.
_NOT_IN_WANDB_PROJECT = "/\\#?%:"

_check = check_setting


@dataclass
class DataConfig:
    """Where the raw data comes from, how it is cleaned, and where the prepared dataset goes."""

    # Raw review files (paths or globs): 2018 JSON lines (.json/.json.gz), ratings-only CSV, or
    # the original design's combined_samples.csv. Empty: the generated default dataset.
    reviews: list[str] = field(default_factory=list)
    # Raw item metadata files (paths or globs): 2018 JSON lines or 2014 Python-literal lines.
    meta: list[str] = field(default_factory=list)
    # The generated default dataset (used when `reviews` is empty); made on first use.
    generated_dir: str = "data/generated/default"
    generate_users: int = 2000  # users the generator makes
    generate_items: int = 600  # items the generator makes
    generate_seed: int = 0  # the generator's seed (the same seed, the same files)
    prepared_dir: str = "data/prepared/default"  # where `prepare` writes the Parquet files and manifest
    min_rating: Union[float, None] = None  # drop reviews rated below this (None: keep all)
    kcore: int = 0  # iteratively keep users and items with >= kcore interactions (0: off)
    strict: bool = False  # a malformed input line is fatal instead of counted and dropped
    error_examples: int = 5  # file:line examples kept per drop reason in the manifest
    read_chunk_lines: int = 20000  # raw lines per Ray Data block when parsing

    def validate(self) -> None:
        _check(self.generate_users >= 10, "data.generate_users", ">= 10", self.generate_users)
        _check(self.generate_items >= 20, "data.generate_items", ">= 20", self.generate_items)
        _check(self.kcore >= 0, "data.kcore", ">= 0", self.kcore)
        _check(self.error_examples >= 0, "data.error_examples", ">= 0", self.error_examples)
        _check(self.read_chunk_lines >= 100, "data.read_chunk_lines", ">= 100", self.read_chunk_lines)
        if self.min_rating is not None:
            _check(0 <= self.min_rating <= 5, "data.min_rating", "in [0, 5]", self.min_rating)
        if self.meta and not self.reviews:
            raise UserError("config: data.meta is set but data.reviews is empty; give the review files too")


@dataclass
class TextConfig:
    """How item descriptions become vectors: once per item, at prepare time."""

    encoder: TextEncoder = "auto"  # "auto": MiniLM when installed, else hashing (the log says which ran)
    model_path: Union[str, None] = None  # a local transformers model dir (default: the packaged MiniLM)
    dim: int = 384  # hashing encoder only; the transformer's size comes from the model
    max_length: int = 128  # tokens per description the transformer reads (longer ones are cut)
    batch_size: int = 64  # descriptions an embedding actor encodes at once
    actors: int = 1  # embedding actors in the Ray Data actor pool (each loads the model once)

    def validate(self) -> None:
        _check(self.encoder in TEXT_ENCODERS, "text.encoder", f"one of {TEXT_ENCODERS}", self.encoder)
        _check(self.dim >= 8, "text.dim", ">= 8", self.dim)
        _check(8 <= self.max_length <= 512, "text.max_length", "in [8, 512]", self.max_length)
        _check(self.batch_size >= 1, "text.batch_size", ">= 1", self.batch_size)
        _check(self.actors >= 1, "text.actors", ">= 1", self.actors)


@dataclass
class SamplingConfig:
    """Negative mixing: k negatives per positive, a share of them from the item's also-view list."""

    negatives_per_positive: int = 4  # k: the negatives mixed for each training positive
    also_view_fraction: float = 0.5  # share of negatives drawn from the positive item's also-view list
    # Epochs over which the also-view share rises linearly from 0 to also_view_fraction (0: the
    # full share from the first epoch): easy negatives first, hard ones once the model ranks.
    also_view_warmup_epochs: int = 0
    random_pool: RandomPool = "uniform"  # where the other negatives come from
    # Leave out of every draw the also-view neighbours of the user's other training items (likely
    # false negatives: related to what the user chose); the positive's own list stays. Off by
    # default (the design).
    exclude_related: bool = False
    # Candidates drawn per negative; the training worker keeps the one the model scores highest
    # (dynamic negative sampling). 1 (the design): every drawn negative trains.
    candidates_per_negative: int = 1
    popularity_exponent: float = 0.75  # popularity pool weights: (train count + 1) ** exponent
    # Positives per mixing block. Negatives are seeded by (seed, epoch, block), so for a given
    # block size an epoch's samples are the same for any number of workers.
    block_rows: int = 2048
    # Blocks each Ray Data mixing task draws, one after the other (a task's scheduling costs more
    # than mixing a block; the results do not depend on this).
    blocks_per_task: int = 32
    # CPUs each Ray Data mixing task asks for; None: the resource plan picks (0.5 where there is
    # room, down to 0.25), so that one task per worker's feed fits beside everything else.
    cpus_per_task: Union[float, None] = None

    @property
    def drawn_per_positive(self) -> int:
        """Negatives the mixing draws per positive: every candidate of every negative."""
        return self.negatives_per_positive * self.candidates_per_negative

    def validate(self) -> None:
        _check(self.negatives_per_positive >= 1, "sampling.negatives_per_positive", ">= 1", self.negatives_per_positive)
        _check(
            self.candidates_per_negative >= 1, "sampling.candidates_per_negative", ">= 1", self.candidates_per_negative
        )
        _check(
            0.0 <= self.also_view_fraction <= 1.0, "sampling.also_view_fraction", "in [0, 1]", self.also_view_fraction
        )
        _check(
            self.also_view_warmup_epochs >= 0, "sampling.also_view_warmup_epochs", ">= 0", self.also_view_warmup_epochs
        )
        _check(self.random_pool in RANDOM_POOLS, "sampling.random_pool", f"one of {RANDOM_POOLS}", self.random_pool)
        _check(self.popularity_exponent >= 0, "sampling.popularity_exponent", ">= 0", self.popularity_exponent)
        _check(self.block_rows >= 16, "sampling.block_rows", ">= 16", self.block_rows)
        _check(self.blocks_per_task >= 1, "sampling.blocks_per_task", ">= 1", self.blocks_per_task)
        if self.cpus_per_task is not None:
            _check(0 < self.cpus_per_task <= MAX_CPUS, "sampling.cpus_per_task", CPUS_RULE, self.cpus_per_task)


@dataclass
class TrainConfig:
    """Optimisation and the Ray Train run. Batch size is global: each of N workers takes batch_size / N."""

    epochs: int = 50  # passes over the training positives (early stopping may end sooner)
    batch_size: int = 512  # samples per optimiser step over all workers
    learning_rate: float = 0.01  # Adam's step size
    # bce: binary cross-entropy per sample (the design); bpr: each positive above each of its own
    # negatives; softmax: a sampled softmax over each positive, its negatives and (with
    # in_batch_negatives) the batch's other positives; full_softmax: cross-entropy of each positive
    # over every item (catalogs that fit: training/losses.py; its mixed negatives are not read)
    loss: Loss = "bce"
    softmax_temperature: float = 1.0  # the softmax's logits are divided by it
    # softmax: subtract each candidate's log sampling probability (logQ: also-view and popular
    # items are drawn more often than uniform) so the sampled loss estimates the full softmax
    logq_correction: bool = True
    in_batch_negatives: bool = True  # softmax: the batch's other positives are negatives too
    # softmax, full_softmax: add this weight times each group's also-view negatives' -log
    # sigmoid(positive - negative) (BPR), so the one model that ranks every item also learns to tell
    # the positive from its neighbours. 0: off.
    hard_negative_weight: float = 0.0
    num_workers: int = 1  # Ray Train workers (processes, each with a copy of the model)
    use_gpu: Union[bool, Literal["auto"]] = "auto"  # auto: use GPUs when the cluster has them
    # CPUs per training worker; None: the resource plan picks a share that leaves every worker's
    # feed room for a mixing task (resources.py; a task that cannot start hangs the run).
    cpus_per_worker: Union[float, None] = None
    runs_dir: str = "runs"  # where each run's directory (checkpoints, model.pt, metrics) goes
    run_name: str = "default"  # the same name again resumes from the last checkpoint
    num_to_keep: int = 2  # checkpoints kept (the latest ones; each also holds the best weights)
    # Worker-group restarts from the last checkpoint: a lost worker or node costs an epoch, not
    # the run. 0: the first failure ends it (run the same command again to resume); -1: no limit.
    max_failures: int = 2
    # Ranking metrics (valid/full/*, valid/sampled100/*) are measured every epoch on a seeded
    # sample of this many validation users (all of them when fewer); the AUCs on all of them.
    valid_users: int = 2000
    early_stopping_metric: ValidationMetric = "valid/full/ndcg@10"  # the validation metric the best epoch maximises
    patience: int = 10  # epochs without improvement before stopping; 0 turns early stopping off
    # Stop as soon as an epoch's early-stopping metric reaches this value (a quality target: the
    # time-to-quality benchmark; Lightning's EarlyStopping(stopping_threshold)); None: no target.
    stop_at: Union[float, None] = None
    # Seconds a stage that waits on the cluster (prepare's parse and embedding, training steps and
    # validation, an evaluation, a search's trials) may go without progress before it stops with
    # what was waiting and who holds the CPUs (stall.py; work placed and still starting is not a
    # stall): a run on a cluster it does not own can starve. 0: wait for ever.
    stall_timeout: float = 300.0

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", ">= 1", self.epochs)
        _check(self.batch_size >= 1, "train.batch_size", ">= 1", self.batch_size)
        _check(self.learning_rate > 0, "train.learning_rate", "> 0", self.learning_rate)
        _check(self.loss in LOSSES, "train.loss", f"one of {LOSSES}", self.loss)
        _check(self.softmax_temperature > 0, "train.softmax_temperature", "> 0", self.softmax_temperature)
        _check(
            0.0 <= self.hard_negative_weight <= 100.0 and math.isfinite(self.hard_negative_weight),
            "train.hard_negative_weight",
            "in [0, 100]",
            self.hard_negative_weight,
        )
        if self.hard_negative_weight > 0:
            _check(
                self.loss in HARD_TERM_LOSSES,
                "train.loss",
                f"one of {HARD_TERM_LOSSES} with train.hard_negative_weight > 0",
                self.loss,
            )
        _check(self.num_workers >= 1, "train.num_workers", ">= 1", self.num_workers)
        _check(self.batch_size >= self.num_workers, "train.batch_size", ">= train.num_workers", self.batch_size)
        _check(self.use_gpu in (True, False, "auto"), "train.use_gpu", "true, false or auto", self.use_gpu)
        if self.cpus_per_worker is not None:
            _check(0 < self.cpus_per_worker <= MAX_CPUS, "train.cpus_per_worker", CPUS_RULE, self.cpus_per_worker)
        _check(is_plain_name(self.run_name), "train.run_name", PLAIN_NAME_RULE, self.run_name)
        # Run outputs are written as files: on a cluster use a shared mount (EFS/NFS) at the same path on every node.
        _check(
            "://" not in self.runs_dir,
            "train.runs_dir",
            "a filesystem path (URIs such as s3:// are not supported yet; use a shared mount on clusters)",
            self.runs_dir,
        )
        _check(self.num_to_keep >= 1, "train.num_to_keep", ">= 1", self.num_to_keep)
        _check(self.max_failures >= -1, "train.max_failures", ">= -1", self.max_failures)
        _check(self.valid_users >= 1, "train.valid_users", ">= 1", self.valid_users)
        _check(
            self.early_stopping_metric in VALIDATION_METRICS,
            "train.early_stopping_metric",
            f"one of {VALIDATION_METRICS}",
            self.early_stopping_metric,
        )
        _check(self.patience >= 0, "train.patience", ">= 0", self.patience)
        if self.stop_at is not None:
            _check(math.isfinite(self.stop_at), "train.stop_at", "a finite number or null", self.stop_at)
        week = 7 * 86400
        _check(0 <= self.stall_timeout <= week, "train.stall_timeout", f"in [0, {week}] seconds", self.stall_timeout)


@dataclass
class TuneConfig:
    """Ray Tune with Optuna (TPE) and ASHA over the search space; every trial is one Ray Train run."""

    name: str = "tune"  # the same name again resumes an interrupted tuning run
    num_samples: Union[int, None] = None  # None: 4 per trial the cluster runs at once, at least 8
    max_concurrent_trials: Union[int, None] = None  # None: as many as the cluster's CPUs/GPUs fit
    metric: ValidationMetric = "valid/full/ndcg@10"  # the validation metric the search maximises
    # Epochs per trial (ASHA's max_t): short trials to rank the settings; retrain the best one for
    # train.epochs. None: train.epochs.
    max_epochs: Union[int, None] = 10
    grace_period: int = 2  # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: int = 2  # ASHA: one trial in this many goes on at each rung
    # After the search: train the best settings for train.epochs (or keep the best trial when it
    # already ran them) into <run>/best/, test it against the baselines, write report.md.
    final: bool = True
    final_eval_users: Union[int, None] = None  # test users the final evaluation scores (None: all)
    # config key -> {kind: arguments}, keys nested or dotted; kinds: uniform [lo, hi], loguniform
    # [lo, hi], choice [values...], randint [lo, hi). A YAML space refines the built-in one key by
    # key; a key set to null is left out of the search (config/search_space.py).
    search_space: dict = field(default_factory=_default_search_space, metadata={"merge": refine_search_space})
    # The first trials' settings, section -> key -> value, each completed from the config for
    # the searched keys it leaves out; TPE takes over after them. None: the built-in ones (the
    # config as it is, then the kind of settings that won on real data), fitted to the space.
    start_points: Union[list[dict], None] = None

    def validate(self) -> None:
        if self.num_samples is not None:
            _check(self.num_samples >= 1, "tune.num_samples", ">= 1", self.num_samples)
        if self.max_concurrent_trials is not None:
            _check(self.max_concurrent_trials >= 1, "tune.max_concurrent_trials", ">= 1", self.max_concurrent_trials)
        _check(self.metric in VALIDATION_METRICS, "tune.metric", f"one of {VALIDATION_METRICS}", self.metric)
        if self.max_epochs is not None:
            _check(self.max_epochs >= 1, "tune.max_epochs", ">= 1", self.max_epochs)
        _check(self.grace_period >= 1, "tune.grace_period", ">= 1", self.grace_period)
        _check(self.reduction_factor >= 2, "tune.reduction_factor", ">= 2", self.reduction_factor)
        if self.final_eval_users is not None:
            _check(self.final_eval_users >= 1, "tune.final_eval_users", ">= 1", self.final_eval_users)
        _check(is_plain_name(self.name), "tune.name", PLAIN_NAME_RULE, self.name)
        _check(isinstance(self.search_space, dict), "tune.search_space", "a mapping", self.search_space)
        for key, spec in flatten_search_space(self.search_space).items():
            check_search_spec(key, spec, Config, moved_key)
        if self.start_points is not None:
            _check(isinstance(self.start_points, list), "tune.start_points", "a list of points", self.start_points)


@dataclass
class TrackingConfig:
    """Optional experiment tracking in MLflow and/or W&B: each `alsoview train` as one run, each
    tuning trial as one (distributed/tracking.py; off, nothing imports either)."""

    mlflow: bool = False  # log each train run and tuning trial to MLflow (needs `pip install mlflow-skinny`)
    # Where MLflow keeps the runs: a plain path or a file: URI (a relative one under the storage
    # root), or another MLflow tracking URI handed over as it is. None: `<storage>/mlruns`.
    mlflow_uri: Union[str, None] = None
    experiment: str = "alsoview"  # the MLflow experiment the runs go into (made when missing)
    wandb: bool = False  # log each train run and tuning trial to W&B (needs `pip install wandb`)
    wandb_project: str = "alsoview"  # the W&B project the runs go into
    wandb_mode: WandbMode = "offline"  # offline: local files only, nothing leaves the machine
    # The folder W&B writes into (its runs land in a `wandb/` folder inside; a relative path under
    # the storage root). None: `<storage>/wandb`.
    wandb_dir: Union[str, None] = None

    def validate(self) -> None:
        _check(self.mlflow in (True, False), "tracking.mlflow", "true or false", self.mlflow)
        if self.mlflow_uri is not None:
            _check(
                bool(self.mlflow_uri.strip()) and "\n" not in self.mlflow_uri,
                "tracking.mlflow_uri",
                "a path or an MLflow tracking URI, on one line",
                self.mlflow_uri,
            )
            _check(
                not self.mlflow_uri.startswith("file:")
                or urllib.parse.urlparse(self.mlflow_uri).netloc in ("", "localhost"),
                "tracking.mlflow_uri",
                "a file: URI of this machine (file:///path, no host)",
                self.mlflow_uri,
            )
        _check(
            bool(self.experiment.strip()) and "\n" not in self.experiment and len(self.experiment) <= 256,
            "tracking.experiment",
            "a name of 1 to 256 characters on one line",
            self.experiment,
        )
        _check(self.wandb in (True, False), "tracking.wandb", "true or false", self.wandb)
        _check(
            bool(self.wandb_project.strip())
            and len(self.wandb_project) <= 128
            and not any(c in self.wandb_project for c in "\n" + _NOT_IN_WANDB_PROJECT),
            "tracking.wandb_project",
            f"a name of 1 to 128 characters on one line, none of {_NOT_IN_WANDB_PROJECT}",
            self.wandb_project,
        )
        _check(self.wandb_mode in WANDB_MODES, "tracking.wandb_mode", f"one of {WANDB_MODES}", self.wandb_mode)
        if self.wandb_dir is not None:
            _check(
                bool(self.wandb_dir.strip()) and "\n" not in self.wandb_dir,
                "tracking.wandb_dir",
                "a path on one line",
                self.wandb_dir,
            )


@dataclass
class Config:
    """The whole run configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0  # every random stream derives from it (seeds.py): the same seed, the same run
    # Where relative output paths (data.generated_dir, data.prepared_dir, train.runs_dir) live.
    # None: $ALSOVIEW_HOME, else ~/alsoview (see paths.storage_root).
    storage: Union[str, None] = None

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "validate"):
                value.validate()
        check_bounds(self)  # every number finite, every size below its ceiling (bounds.py)
        self.start_points()  # explicit start points must fit the space
        if self.train.hard_negative_weight > 0:
            _check(
                self.sampling.also_view_fraction > 0,
                "sampling.also_view_fraction",
                "> 0 with train.hard_negative_weight > 0 (its term reads the also-view negatives)",
                self.sampling.also_view_fraction,
            )
        if self.train.loss == "full_softmax":
            slow = [f"model.{name}" for name, part in self.model.parts() if not part.scores_every_item]
            _check(
                not slow,
                "train.loss",
                f"a loss over sampled items with {', '.join(slow)} on (it cannot score every item in training: "
                "turn it off or use train.loss=softmax)",
                self.train.loss,
            )
        if self.storage is not None:
            _check(
                bool(self.storage) and "://" not in self.storage,
                "storage",
                "a filesystem path (on a cluster, a shared mount)",
                self.storage,
            )

    def search_space(self) -> tuple[dict[str, dict], list[str]]:
        """The keys the search varies, by dotted key, and notes on what was left out of it
        (`search_space.effective_search_space`)."""
        space = flatten_search_space(self.tune.search_space)
        return effective_search_space(space, Config, self.current)

    def start_points(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The search's first trials as complete settings of the searched keys, and notes on how
        the space and the built-in points were fitted to the config (`resolve_start_points`)."""
        space, notes = self.search_space()
        points, point_notes = resolve_start_points(space, self.tune.start_points, self.current)
        return points, notes + point_notes

    def current(self, key: str) -> Any:
        """A dotted key's value (`config.keys.current_value`)."""
        return current_value(self, key)

    def dataset_settings(self) -> dict[str, dict[str, Any]]:
        """The sections a prepared dataset depends on (its manifest records them)."""
        return {"data": dataclasses.asdict(self.data), "text": dataclasses.asdict(self.text)}

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as YAML holds them: a part without settings that is on reads `true`."""
        return _plain(self)


def moved_key(key: str) -> str | None:
    """Where an old flat model key (`model.user.history`) went, if `key` is one."""
    section, _, name = key.partition(".")
    return ModelConfig.moved_keys.get(name) if section == "model" else None


def _plain(value: Any) -> Any:
    if isinstance(value, Part) and not has_settings(value):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = typing.get_type_hints(type(value))
        return {
            f.name: False
            if getattr(value, f.name) is None and optional_part(hints[f.name])
            else _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
