"""No silent stall: a stage that waits on the cluster and makes no progress for
`train.stall_timeout` seconds stops and says what was waiting, for which resources, who holds
them and what to change, in one line (`StallError`, exit code 1).

The resource plan (`resources.py`) proves that a run fits a cluster it has to itself. On a
cluster shared with others it can still starve: someone else holds the CPUs its tasks, actors
or workers need, and Ray waits for ever without a word. So every stage that waits on the
cluster has a watch, and every watch ends in the same line (`stalled_line`: the stage, what it
waited for, the cluster's CPUs, `holders()`, what to change):

- **what the driver waits on** (prepare's Ray Data parse tasks and embedding actors, an
  evaluation's scoring actors): `watched` hands the stage's batches over from a thread of its
  own; a batch arriving is progress (`Idle`), and when none arrives for the timeout the stage
  ends with its diagnosis and the thread's Ray Data execution is stopped (its pending tasks and
  actors go);
- **a search's trials** (`tune.SearchWatch`, a Tune callback fed by Tune's own loop): trials
  waiting while none runs, or a trial whose training stalled, end the search;
- **training** (below), whose progress is made on the workers, reports to a `ProgressBoard`.

For training:

- the workers tell a `ProgressBoard` actor when they start, each (throttled) step, when they wait
  for their feed and when they finish validating;
- a thread beside `TorchTrainer.fit()` (in the driver, or in a Tune trial's function) reads the
  board; when nothing moved for the timeout it writes down the diagnosis (Ray's resources and
  who holds them) and stops the run;
- workers that cannot be placed at all are Ray Train's own case: the run sets Train's worker-group
  start timeout to the stall timeout and allows no retry of it (`train_settings`), so Train stops
  by itself and removes its waiting placement group. (Train's controller cannot be aborted
  while it waits for one: it waits synchronously; killing it would leave the group behind, to
  be placed later and hold the CPUs until the driver ends.)
- workers that were placed and then wait (for their feed, a collective) are aborted through
  Train's controller, which the board learned of from `RegisterController` when it started; the
  same callback tells the board when the worker group is up, so the idle clock restarts there
  (starting worker processes on a loaded node is not a stall) and a group that is up but whose
  loop never began is told apart from one never placed;
- `train.fit_watched` turns the stopped fit into one line (`StallError`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Iterator, TypeVar

from alsoview.distributed.resources import ResourcePlan
from alsoview.errors import RunFailedError

log = logging.getLogger("alsoview")

BEAT_EVERY = 1.0  # seconds between a worker's step reports (each is one actor call)
ABORT_GRACE = 30.0  # seconds Train may take to stop after the watch (or its own timeout) said so
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # Ray Train passes it to its controller


@contextlib.contextmanager
def train_start_timeout(seconds: float) -> Iterator[None]:
    """Ray Train's worker-group start timeout set to `seconds` while the block runs (the driver
    passes it to the controller it starts); the previous value is put back."""
    before = os.environ.get(START_TIMEOUT_ENV)
    os.environ[START_TIMEOUT_ENV] = f"{seconds:g}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(START_TIMEOUT_ENV, None)
        else:
            os.environ[START_TIMEOUT_ENV] = before


def is_start_timeout(exc: BaseException) -> bool:
    """Whether `fit()` failed because Train's workers could not be placed in time."""
    from alsoview.distributed.ray_internals import worker_group_startup_timeout_error

    return isinstance(getattr(exc, "controller_failure", None), worker_group_startup_timeout_error())


class StallError(RunFailedError):
    """The run made no progress for train.stall_timeout seconds and was stopped."""


# ---------------------------------------------------------------- every stage


@dataclass
class Idle:
    """A stage's idle clock: seconds since its last progress, against its timeout (0: never stalls)."""

    timeout: float
    last: float = field(default_factory=time.monotonic)

    def progressed(self) -> None:
        self.last = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.last

    def stalled(self) -> bool:
        return self.timeout > 0 and self.seconds() >= self.timeout


T = TypeVar("T")
_DONE = object()


class _Stopped(BaseException):
    """Raised inside a watched iteration's thread to end it (a BaseException: Ray Data's
    iterator shuts its execution down on any, and no `except Exception` may swallow it)."""


def watched(make: Callable[[], Iterable[T]], timeout: float, diagnosis: Callable[[], str]) -> Iterator[T]:
    """The batches of `make()` (a Ray Data pipeline the driver waits on: built, then iterated) as
    they arrive; when none arrives for `timeout` seconds (0: wait for ever) while something this
    driver asked for waits to be placed, StallError with `diagnosis()`.

    The pipeline is built and iterated in a thread of its own, so the driver can give up on it:
    building one asks Ray for tasks (`from_arrow`'s metadata), and an iterator waiting for a task
    that is never placed does not return. Ending the thread (a `_Stopped` raised in it) makes
    Ray Data shut its execution down, so what it asked for stops waiting for CPUs; a thread
    still inside `ray.get` ends when that returns.
    """
    if timeout <= 0:
        yield from make()
        return
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    running = threading.Lock()  # held while the thread may be stopped: inside the pipeline

    def hand_over(item: Any) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put(item, timeout=0.1)
                return

    def produce() -> None:
        try:
            with running:
                try:
                    for batch in make():
                        hand_over((batch, None))
                    hand_over((_DONE, None))
                except _Stopped:
                    pass
                except BaseException as exc:  # the stage's own error, raised where it waits
                    hand_over((None, exc))
        except _Stopped:  # arrived just as the pipeline ended
            pass

    thread = threading.Thread(target=produce, name="stall-watched-batches", daemon=True)
    thread.start()
    idle, poll = Idle(timeout), min(1.0, max(0.05, timeout / 10))
    try:
        while True:
            try:
                batch, error = handoff.get(timeout=poll)
            except queue.Empty:
                if idle.stalled():
                    if waits_on_cluster():
                        raise StallError(diagnosis()) from None
                    idle.progressed()  # all it asked for is placed: it is starting or working
                continue
            if error is not None:
                raise error
            if batch is _DONE:
                return
            idle.progressed()
            yield batch
            idle.progressed()  # the time the stage spent on the batch was not spent waiting
    finally:
        stop.set()
        _end(thread, running)


def _end(thread: threading.Thread, running: threading.Lock) -> None:
    """Stop a watched pipeline's thread where it waits (Ray Data's iterator waits in a Python
    loop, so the exception arrives within its next poll), and give its execution a moment to
    shut down; a thread blocked in `ray.get` is left to end by itself (it is a daemon)."""
    if running.locked() and thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Stopped))
    thread.join(timeout=5)


def stalled_line(stage: str, nothing: str, timeout: float, waited: str, change: str, gpus: bool = False) -> str:
    """The one line every stalled stage ends with: the stage, what did not happen, what waited,
    the cluster's CPUs (and GPUs) held and free (Ray's state), who holds them, what to change."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    cpus = f"the cluster has {total.get('CPU', 0):g} CPUs, {free.get('CPU', 0):.3g} free"
    if gpus:
        cpus += f", {total.get('GPU', 0):g} GPUs, {free.get('GPU', 0):.3g} free"
    return (
        f"{stage} stalled: {nothing} for {timeout:g}s (train.stall_timeout): {waited}; {cpus}; "
        f"{holders()}; {change}, or set train.stall_timeout=0 to wait for ever"
    )


# ---------------------------------------------------------------- training


@dataclass
class Snapshot:
    idle_seconds: float  # since the last progress of any worker (or the group's start, or the board's)
    placed: bool  # Train's worker group is up: its placement group was ready and its actors started
    started: list[int]  # ranks whose loop began
    steps: dict[int, int]  # rank -> steps taken in this run
    waiting: dict[int, tuple[str, float]]  # rank -> (what it waits for, seconds so far)


@dataclass
class ProgressBoard:
    """What the workers of one run report; runs as a zero-CPU actor owned by whoever calls fit().

    Times are taken in this actor's process only, so they never mix clocks of several nodes.
    """

    last: float = field(default_factory=time.monotonic)
    placed: bool = False
    started: set[int] = field(default_factory=set)
    steps: dict[int, int] = field(default_factory=dict)
    waiting_since: dict[int, tuple[str, float]] = field(default_factory=dict)
    controller: Any = None

    def group_placed(self) -> None:
        self.placed = True
        self.last = time.monotonic()

    def worker_started(self, rank: int) -> None:
        self.started.add(rank)
        self.last = time.monotonic()

    def progressed(self, rank: int, steps: int) -> None:
        self.steps[rank] = steps
        self.waiting_since.pop(rank, None)
        self.last = time.monotonic()

    def waiting(self, rank: int, what: str) -> None:
        self.waiting_since[rank] = (what, time.monotonic())

    def set_controller(self, handle: Any) -> None:
        self.controller = handle

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        return Snapshot(
            idle_seconds=now - self.last,
            placed=self.placed,
            started=sorted(self.started),
            steps=dict(self.steps),
            waiting={rank: (what, now - since) for rank, (what, since) in self.waiting_since.items()},
        )

    def abort(self, force: bool = False) -> bool:
        """Ask Train's controller to abort the run (it stops the workers, then exits); `force`:
        kill it, for when its event loop is stuck (it waits for a placement group synchronously),
        and its workers with it (they are its children; Train's cleaner removes the group)."""
        if self.controller is None:
            return False
        if force:
            import ray

            ray.kill(self.controller, no_restart=True)
        else:
            self.controller.abort.remote()
        return True


def register_controller_callback(board: Any) -> Any:
    """A Ray Train callback that hands the controller's handle to `board` when it starts, and
    tells it when the worker group is up.

    Train V2 runs `fit()` as a controller actor with no public handle; its `abort()` is the
    graceful stop Ctrl-C uses. The callback's bases are Ray Train's internal `ControllerCallback`
    and `WorkerGroupCallback` (ray_internals.py; tests/test_stall.py exercises both).
    """
    from alsoview.distributed.ray_internals import controller_callback_bases

    ControllerCallback, WorkerGroupCallback = controller_callback_bases()

    class RegisterController(ControllerCallback, WorkerGroupCallback):
        def __init__(self, board: Any) -> None:
            self.board = board

        def after_controller_start(self, train_run_context: Any) -> None:
            import ray

            self.board.set_controller.remote(ray.get_runtime_context().current_actor)

        def after_worker_group_start(self, worker_group: Any) -> None:
            self.board.group_placed.remote()

    return RegisterController(board)


class WorkerBeat:
    """A training worker's side: tells the board it started, waits, steps (at most every
    BEAT_EVERY seconds, fire-and-forget) and validated. No board: does nothing."""

    def __init__(self, board: Any, rank: int) -> None:
        self.board, self.rank, self.steps, self.sent = board, rank, 0, 0.0
        if board is not None:
            board.worker_started.remote(rank)

    def waiting(self, what: str) -> None:
        if self.board is not None:
            self.board.waiting.remote(self.rank, what)

    def step(self, _steps_this_epoch: int = 0) -> None:
        self.steps += 1
        now = time.monotonic()
        if self.board is not None and now - self.sent >= BEAT_EVERY:
            self.sent = now
            self.board.progressed.remote(self.rank, self.steps)

    def progressed(self) -> None:
        """Work other than a step finished (validation, a checkpoint)."""
        if self.board is not None:
            self.sent = time.monotonic()
            self.board.progressed.remote(self.rank, self.steps)


class StallWatch:
    """A thread beside `fit()`: when the board shows no progress for `timeout` seconds once the
    worker group is up, it writes the diagnosis to `reason` and aborts the run."""

    def __init__(self, board: Any, timeout: float, plan: ResourcePlan, run: str) -> None:
        self.board, self.timeout, self.plan, self.run = board, timeout, plan, run
        self.reason: str | None = None
        self._stop = threading.Event()  # set when fit() has returned
        self._thread = threading.Thread(target=self._watch, name=f"stall-watch-{run}", daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        import ray

        poll = min(5.0, max(0.5, self.timeout / 10))
        while not self._stop.wait(poll):
            try:
                snapshot = ray.get(self.board.snapshot.remote(), timeout=60)
            except Exception as exc:  # the board went with the run (fit is ending): nothing to watch
                log.debug("stall watch of %s ended: %s", self.run, exc)
                return
            if snapshot.placed:
                if snapshot.idle_seconds >= self.timeout:
                    self._stop_run(snapshot, graceful=True)
                    return
            # Not placed yet: starting the controller and the worker processes is not a stall, and
            # Train's own start timeout (the same length, from its placement request) ends a run
            # whose workers find no room. This is the backstop for when Train does not.
            elif snapshot.idle_seconds >= 2 * self.timeout + ABORT_GRACE:
                self._stop_run(snapshot, graceful=False)
                return

    def _stop_run(self, snapshot: Snapshot, graceful: bool) -> None:
        """Write the diagnosis; abort through Train's controller and give it ABORT_GRACE
        (`graceful`), then kill the controller if the run is still going."""
        import ray

        self.reason = diagnose(snapshot, self.plan, self.timeout, self.run)
        log.warning("%s", self.reason)
        why = "Ray Train did not stop at its worker start timeout"
        if graceful:
            if not ray.get(self.board.abort.remote(), timeout=60):
                log.warning("%s: Ray Train's controller never registered; it cannot be stopped from here", self.run)
            if self._stop.wait(ABORT_GRACE):
                return
            why = "Ray Train did not stop"
        log.warning("%s: %s; killing its controller", self.run, why)
        ray.get(self.board.abort.remote(force=True), timeout=60)


def diagnose(snapshot: Snapshot, plan: ResourcePlan, timeout: float, run: str) -> str:
    """One line: what waited, the cluster's resources held and free (Ray's state), what to change."""
    gpu = " + 1 GPU" if plan.use_gpu else ""
    if not snapshot.placed:
        waited = (
            f"{plan.workers - len(snapshot.started)} of its {plan.workers} training workers "
            f"({plan.cpus_per_worker:g} CPU{gpu} each) were never placed"
        )
        change = "free those CPUs, or lower train.num_workers or train.cpus_per_worker"
    elif len(snapshot.started) < plan.workers:
        waited = (
            f"{plan.workers - len(snapshot.started)} of its {plan.workers} training workers were placed "
            f"but did not begin their training loop"
        )
        change = (
            "see the workers' logs (Ray dashboard) for where they wait; if they only start slowly, "
            "raise train.stall_timeout"
        )
    elif snapshot.waiting:
        waits = sorted(snapshot.waiting.items())
        waited = "; ".join(f"worker {rank} waited {seconds:.0f}s for {what}" for rank, (what, seconds) in waits)
        change = (
            f"each feed's mixing tasks ask {plan.cpus_per_mix_task:g} CPU: free that much, or set "
            f"sampling.cpus_per_task lower"
        )
    else:
        steps = ", ".join(f"worker {rank}: {n}" for rank, n in sorted(snapshot.steps.items())) or "none"
        waited = f"the workers were placed and fed but took no step (steps so far: {steps})"
        change = "see the workers' logs (Ray dashboard) for where they wait"
    return stalled_line(run, "no training step", timeout, waited, change, plan.use_gpu)


@dataclass
class Holders:
    """What holds the cluster's CPUs and what waits for them, as Ray's state API tells it."""

    held: Counter = field(default_factory=Counter)  # (name, CPUs) -> how many
    waiting: Counter = field(default_factory=Counter)  # tasks and placement groups not yet placed
    ours_waiting: int = 0  # of those, asked by this driver's job
    unknown: str = ""  # why the state API told nothing (it needs the dashboard)

    def __str__(self) -> str:
        if self.unknown:
            return f"{UNKNOWN_HOLDERS} (Ray's state API did not answer: {self.unknown})"
        text = "held: " + (_counted(self.held) or "nothing")
        return text + (f"; waiting for CPUs: {_counted(self.waiting)}" if self.waiting else "")


def holders() -> str:
    """Who holds CPUs, and what waits for them, from Ray's state API (best effort: it needs the
    dashboard, and a cluster may not run one)."""
    return str(cluster_holders())


UNKNOWN_HOLDERS = "who holds them is unknown"


def cluster_holders(attempts: int = 2) -> Holders:
    """`Holders` read from Ray's state API; with `unknown` set when it does not answer (a
    dashboard busy on a loaded node can refuse one call: it is asked again)."""
    found = _read_holders()
    for _ in range(attempts - 1):
        if not found.unknown:
            break
        time.sleep(2)
        found = _read_holders()
    return found


def _read_holders() -> Holders:
    try:
        import ray
        from ray.util.state import list_actors, list_placement_groups, list_tasks

        actors = list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=10_000, timeout=20)
        running = list_tasks(filters=[("state", "=", "RUNNING")], detail=True, limit=10_000, timeout=20)
        pending = list_tasks(filters=[("state", "=", "PENDING_NODE_ASSIGNMENT")], detail=True, limit=10_000, timeout=20)
        groups = list_placement_groups(filters=[("state", "=", "PENDING")], detail=True, limit=10_000, timeout=20)
        job = ray.get_runtime_context().get_job_id()
    except Exception as exc:
        return Holders(unknown=type(exc).__name__)
    found = Holders()
    for actor in actors:
        cpus = _cpus(actor.required_resources)
        if cpus > 0:
            found.held[(actor.class_name, cpus)] += 1
    for task in running:
        cpus = _cpus(task.required_resources)
        if cpus > 0 and task.type == "NORMAL_TASK":
            found.held[(task.name, cpus)] += 1
    for task in pending:
        cpus = _cpus(task.required_resources)
        if cpus > 0:
            found.waiting[(task.name, cpus)] += 1
            found.ours_waiting += task.job_id == job
    for group in groups:
        cpus = sum(float((bundle.get("unit_resources") or {}).get("CPU", 0)) for bundle in group.bundles or [])
        if cpus > 0:
            found.waiting[("placement group", cpus)] += 1
            found.ours_waiting += group.creator_job_id == job
    return found


def waits_on_cluster() -> bool:
    """Whether something this driver asked for waits to be placed (or Ray's state cannot say):
    a stage whose work is all placed, its actors still starting on a loaded node, is slow, not
    stalled."""
    found = cluster_holders()
    return bool(found.unknown) or found.ours_waiting > 0


def _cpus(resources: dict | None) -> float:
    """CPUs a task or actor asks, its placement-group bundle's included (`CPU_group_<id>` keys)."""
    resources = resources or {}
    if "CPU" in resources:
        return float(resources["CPU"])
    group = [value for key, value in resources.items() if key.startswith("CPU_group_") and key.count("_") == 2]
    return float(group[0]) if group else 0.0


def _counted(counts: Counter) -> str:
    return ", ".join(f"{n} x {name} ({cpus:g} CPU)" for (name, cpus), n in counts.most_common())
