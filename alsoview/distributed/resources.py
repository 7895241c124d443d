"""What a run asks of the cluster, counted and checked before anything starts.

One rule serves `alsoview train`, `compare` and `tune`: every reservation the run makes (Tune's
trial functions, Train's controllers, the training workers, each worker's feeder actor and at
least one Ray Data mixing task per feeder) must fit in the cluster at once. Ray never
oversubscribes a logical CPU: a mixing task asking 0.5 CPU when 0.49 is left waits for ever
(a trial function of 0.01 CPU beside two workers of 0.75 on 2 CPUs did exactly that). Where the
user left a split to us (`train.cpus_per_worker`, `sampling.cpus_per_task` unset) the plan picks
one that fits; where the user's settings cannot fit, the run is refused in one line with the
numbers and the nearest settings that do.

The sums are per cluster, not per node: on a cluster of several nodes a worker's CPUs must also
fit on one node, which Ray's placement decides; the stall watchdog (`train.stall_timeout`) ends
any run that waits anyway.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from alsoview.errors import UserError

if TYPE_CHECKING:  # at run time only its attributes are read: the mixing tasks import this module
    from alsoview.config import Config

Command = Literal["train", "compare", "tune"]

TRIAL_CPU = 0.01  # a Tune trial function only waits on its TorchTrainer
CONTROLLER_CPU = 0.0  # Ray Train V2's controller actor asks for none (checked in Ray 2.60's source)
FEEDER_CPU = 0.0  # feed.EpochFeeder: it only drives Ray Data's executor
# Each CPU training worker gets at least this: on 2 CPUs, 3 workers of 0.5 CPU trained; 8 of
# 0.19 hung (measured here before mixing tasks were counted).
MIN_CPUS_PER_WORKER = 0.5
MIN_CPUS_PER_GPU_WORKER = 0.1  # a GPU worker's CPU only feeds its GPU
DEFAULT_CPUS_PER_MIX_TASK = 0.5  # what a mixing task asks when the plan has room
MIN_CPUS_PER_MIX_TASK = 0.25  # the least the plan picks: tinier requests let Ray pile tasks onto a core
# Bytes per mixed sample: the 13 of its columns (int32 user and item, float32 label, uint8 hard
# flag) as stored in the object store, and the peak of a mixing task per sample it outputs:
# 58-69 bytes in `blocks.mix_block` (tracemalloc, k = 1..256 on the generated data) plus the 13
# copied again when the task concatenates its blocks; 100 leaves room.
SAMPLE_BYTES = 13
MIX_TASK_PEAK_BYTES = 100
# Mixed epochs alive at once per worker: the one training reads, the one handed over next and
# what the feed's executor may mix ahead (limited to about one epoch: feed.EpochFeeder).
EPOCHS_IN_FLIGHT = 3
_EPS = 1e-9


@dataclass(frozen=True)
class Reservation:
    """One kind of thing a run places on the cluster: how many at once, and what each asks."""

    what: str
    count: int
    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class ResourcePlan:
    """Every reservation of a run (or of a search: `runs` trials at once), with the split chosen."""

    command: Command
    cluster_cpus: float
    cluster_gpus: float
    runs: int  # training runs at once: 1 for train, the trials Tune runs side by side otherwise
    workers: int  # per run
    use_gpu: bool
    cpus_per_worker: float
    cpus_per_mix_task: float
    torch_threads: int
    num_samples: int = 1  # trials in the search (tune, compare)

    @property
    def trial_cpus(self) -> float:
        return 0.0 if self.command == "train" else TRIAL_CPU

    def reservations(self) -> list[Reservation]:
        runs, workers = self.runs, self.runs * self.workers
        listed = [
            Reservation("Tune trial function", runs if self.command != "train" else 0, self.trial_cpus),
            Reservation("Ray Train controller", runs, CONTROLLER_CPU),
            Reservation("training worker", workers, self.cpus_per_worker, 1.0 if self.use_gpu else 0.0),
            Reservation("epoch feeder actor", workers, FEEDER_CPU),
            Reservation("mixing task (one per feeder)", workers, self.cpus_per_mix_task),
        ]
        return [r for r in listed if r.count]

    @property
    def cpus_reserved(self) -> float:
        return sum(r.count * r.cpus for r in self.reservations())

    @property
    def gpus_reserved(self) -> float:
        return sum(r.count * r.gpus for r in self.reservations())

    def fits(self) -> bool:
        """Everything placed and one mixing task per feeder running, all at once."""
        return self.cpus_reserved <= self.cluster_cpus + _EPS and self.gpus_reserved <= self.cluster_gpus + _EPS

    @property
    def run_budget(self) -> dict[str, float]:
        """The share of the cluster one run (one trial) plans with."""
        return {"CPU": self.cluster_cpus / self.runs, "GPU": self.cluster_gpus / self.runs if self.use_gpu else 0.0}

    def summary(self) -> str:
        """One line: what is placed, and the total against the cluster."""
        per_run = [f"{self.workers} workers x {self.cpus_per_worker:g} CPU" + (" + 1 GPU" if self.use_gpu else "")]
        per_run.append(f"{self.workers} mixing tasks x {self.cpus_per_mix_task:g} CPU")
        if self.command != "train":
            per_run.insert(0, f"trial {self.trial_cpus:g} CPU")
        runs = f"{self.runs} trials x " if self.command != "train" else ""
        return f"{runs}({' + '.join(per_run)}) = {self.cpus_reserved:.3g} of {self.cluster_cpus:g} CPUs" + (
            f", {self.gpus_reserved:g} of {self.cluster_gpus:g} GPUs" if self.use_gpu else ""
        )


def plan_resources(config: Config, cluster: dict[str, float], command: Command) -> ResourcePlan:
    """The run's reservations on `cluster` (Ray's resource dict), proved to fit at once.

    Raises UserError with the numbers and the nearest settings that fit when the user's settings
    cannot; where the user left the split to us, picks one that fits.
    """
    cpus, gpus = float(cluster.get("CPU", 1.0)), float(cluster.get("GPU", 0.0))
    workers = config.train.num_workers
    use_gpu = gpus > 0 if config.train.use_gpu == "auto" else bool(config.train.use_gpu)
    if use_gpu and gpus < workers:
        nearest = f"train.num_workers={int(gpus)}" if gpus >= 1 else "train.use_gpu=false"
        raise UserError(
            f"train.use_gpu needs {workers} GPUs a run (one per worker), the cluster has {gpus:g}; "
            f"nearest that fits: {nearest}"
        )
    trial = 0.0 if command == "train" else TRIAL_CPU
    runs, samples = 1, 1
    if command != "train":
        runs, samples = _concurrent_trials(config, cpus, gpus, use_gpu, trial)
    per_worker, per_mix = _split(config, cpus / runs - trial, use_gpu)
    if workers * (per_worker + per_mix) > cpus / runs - trial + _EPS:
        raise UserError(_refusal(config, cpus / runs, use_gpu, trial, per_worker, per_mix, runs))
    return ResourcePlan(
        command=command,
        cluster_cpus=cpus,
        cluster_gpus=gpus,
        runs=runs,
        workers=workers,
        use_gpu=use_gpu,
        cpus_per_worker=per_worker,
        cpus_per_mix_task=per_mix,
        torch_threads=max(1, int(per_worker)),
        num_samples=samples,
    )


def with_planned_split(config: Config, plan: ResourcePlan) -> Config:
    """`config` as the workers and their feeds run it: the plan's CPUs per worker and per mixing task."""
    return dataclasses.replace(
        config,
        sampling=dataclasses.replace(config.sampling, cpus_per_task=plan.cpus_per_mix_task),
        train=dataclasses.replace(config.train, cpus_per_worker=plan.cpus_per_worker),
    )


def _min_worker_cpus(config: Config, use_gpu: bool) -> float:
    if config.train.cpus_per_worker is not None:
        return config.train.cpus_per_worker
    return MIN_CPUS_PER_GPU_WORKER if use_gpu else MIN_CPUS_PER_WORKER


def _min_mix_cpus(config: Config) -> float:
    given = config.sampling.cpus_per_task
    return given if given is not None else MIN_CPUS_PER_MIX_TASK


def _concurrent_trials(config: Config, cpus: float, gpus: float, use_gpu: bool, trial: float) -> tuple[int, int]:
    """(trials at once, trials in all): as many at once as fit at their smallest split."""
    workers = config.train.num_workers
    smallest = (_min_worker_cpus(config, use_gpu), _min_mix_cpus(config))
    fit = math.floor((cpus + _EPS) / (trial + workers * sum(smallest)))
    if use_gpu:
        fit = min(fit, int(gpus // workers))
    if fit < 1:
        raise UserError(_refusal(config, cpus, use_gpu, trial, *smallest, runs=1))
    fit = min(fit, config.tune.max_concurrent_trials or fit)
    samples = config.tune.num_samples or max(8, 4 * fit)
    return min(fit, samples), samples


def _split(config: Config, available: float, use_gpu: bool) -> tuple[float, float]:
    """(CPUs per worker, CPUs per mixing task) within one run's `available` CPUs: the user's
    values where set; otherwise Ray Data keeps one task per feeder and at least a quarter of the
    CPUs (for more tasks at once), and the workers share the rest."""
    workers = config.train.num_workers
    given_worker, given_mix = config.train.cpus_per_worker, config.sampling.cpus_per_task
    mix_wanted = given_mix if given_mix is not None else DEFAULT_CPUS_PER_MIX_TASK
    per_worker = given_worker
    if per_worker is None:
        share = _floor3((available - max(workers * mix_wanted, 0.25 * available)) / workers)
        per_worker = max(min(1.0, share) if use_gpu else share, _min_worker_cpus(config, use_gpu))
    per_mix = given_mix
    if per_mix is None:
        per_mix = _floor3(min(DEFAULT_CPUS_PER_MIX_TASK, (available - workers * per_worker) / workers))
        per_mix = max(per_mix, MIN_CPUS_PER_MIX_TASK)  # too little room shows as a refusal, not a tiny task
    return per_worker, per_mix


def _refusal(
    config: Config, cpus: float, use_gpu: bool, trial: float, per_worker: float, per_mix: float, runs: int
) -> str:
    """One line: what a run (a trial) needs against what it has, and the nearest settings that fit."""
    workers = config.train.num_workers
    parts = f"{workers} workers x {per_worker:g} CPUs + {workers} mixing tasks (one per worker's feed) x {per_mix:g}"
    if trial:
        parts = f"{trial:g} for the trial function + {parts}"
    needed = trial + workers * (per_worker + per_mix)
    has = f"the cluster has {cpus * runs:g}" if runs == 1 else f"each of {runs} trials at once has {cpus:.3g}"
    return f"{'a trial' if trial else 'the run'} needs {parts} = {needed:.3g} CPUs, {has}; nearest that fits: " + (
        _nearest(config, cpus * runs, use_gpu, trial)
    )


def _nearest(config: Config, cpus: float, use_gpu: bool, trial: float) -> str:
    """The closest settings that fit `cpus`: fewer workers, else smaller user-set CPU shares."""
    workers = config.train.num_workers
    per_worker, per_mix = _min_worker_cpus(config, use_gpu), _min_mix_cpus(config)
    room = cpus - trial
    fit_workers = math.floor((room + _EPS) / (per_worker + per_mix))
    if 1 <= fit_workers < workers:
        return f"train.num_workers={fit_workers}"
    given_worker, given_mix = config.train.cpus_per_worker, config.sampling.cpus_per_task
    default_worker = MIN_CPUS_PER_GPU_WORKER if use_gpu else MIN_CPUS_PER_WORKER
    if given_worker is not None and _floor3(room / workers - per_mix) >= default_worker:
        return f"train.cpus_per_worker={_floor3(room / workers - per_mix):g}"
    if given_mix is not None and _floor3(room / workers - per_worker) >= MIN_CPUS_PER_MIX_TASK:
        return f"sampling.cpus_per_task={_floor3(room / workers - per_worker):g}"
    if given_worker is not None or given_mix is not None:
        return "leave train.cpus_per_worker and sampling.cpus_per_task unset (the plan picks them)"
    return f"a cluster with at least {trial + per_worker + per_mix:.3g} CPUs"


def _floor3(value: float) -> float:
    """Down to a thousandth of a CPU, so that rounded shares never add up past the total."""
    return math.floor(value * 1000 + _EPS) / 1000


def sharing_cores_warning(config: Config, plan: ResourcePlan) -> str | None:
    """Why adding CPU workers will not speed training up here, when it will not: workers with less
    than one CPU each share cores, so they split the same compute and add gradient exchange."""
    workers = config.train.num_workers
    if plan.use_gpu or workers == 1 or plan.cpus_per_worker >= 1:
        return None
    return (
        f"train.num_workers={workers} gets {plan.cpus_per_worker:g} CPUs per worker: the workers share "
        f"cores, so expect no speed-up over {max(1, math.floor(workers * plan.cpus_per_worker))} "
        f"worker(s) (they split the same CPUs and exchange gradients each step); add workers on more CPUs or GPUs"
    )


def check_sample_memory(config: Config, n_positives: int, cluster: dict[str, float], plan: ResourcePlan) -> None:
    """Refuse settings whose mixed samples cannot fit: a mixing task's peak in the memory its
    CPUs come with, or the epochs in flight in the object store plus Ray's spill space."""
    s = config.sampling
    per_positive = 1 + s.drawn_per_positive
    task_rows = s.block_rows * s.blocks_per_task * per_positive
    spare_cpus = max(plan.run_budget["CPU"] - plan.trial_cpus - plan.cpus_per_worker * plan.workers, 0.0)
    tasks_at_once = max(1, math.floor(spare_cpus / plan.cpus_per_mix_task + _EPS))
    memory = cluster.get("memory", 0)
    task_peak = task_rows * MIX_TASK_PEAK_BYTES
    if memory and task_peak * tasks_at_once > memory:
        raise UserError(
            f"sampling.negatives_per_positive={s.negatives_per_positive}: one mixing task of "
            f"{s.blocks_per_task} blocks x {s.block_rows} positives makes {task_rows:,} samples "
            f"(about {_gib(task_peak)} at its peak, {tasks_at_once} tasks at once), more than the "
            f"cluster's {_gib(memory)} of memory; lower sampling.blocks_per_task or sampling.block_rows, "
            f"or the negatives per positive"
        )
    epoch_bytes = n_positives * per_positive * SAMPLE_BYTES * EPOCHS_IN_FLIGHT
    room = cluster.get("object_store_memory", 0) + memory
    if room and epoch_bytes > room:
        raise UserError(
            f"sampling.negatives_per_positive={s.negatives_per_positive}: {n_positives:,} positives "
            f"make {n_positives * per_positive:,} samples an epoch; with {EPOCHS_IN_FLIGHT} epochs in "
            f"flight that is {_gib(epoch_bytes)}, more than the cluster's object store and memory "
            f"({_gib(room)}) could hold even by spilling for long; lower the negatives per positive"
        )


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"
