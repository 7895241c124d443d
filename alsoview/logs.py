"""What the user reads: our log lines, progress of long stages, and Ray's routine chatter kept out.

Ray Data announces every execution ("Starting execution of Dataset ...", its plan, "Progress
bars disabled"), Ray Train logs every report and checkpoint from every worker, and a feed
running beside training warns that no CPU is free at that instant (it is expected: training
holds its share, the mixing tasks wait their turn). Per epoch that is a screenful. `quiet_ray`
drops exactly those messages in the process it runs in (driver, feeder, training worker);
`ALSOVIEW_LOG=debug` (or `--verbose`) brings everything back.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("alsoview")

LOG_ENV = "ALSOVIEW_LOG"  # "debug": Ray's full output and our debug lines

# Substrings of Ray messages that say nothing a user acts on; each is checked against Ray 2.60.
ROUTINE_RAY_MESSAGES = (
    "Starting execution of Dataset",  # ray.data streaming_executor, every execution
    "Execution plan of Dataset",
    "execution finished in",
    "Progress bars disabled",
    "Progress will be logged because stdout",
    "Running Dataset:",  # ray.data logging progress (non-interactive stdout)
    "does not have any available CPUs",  # ray.data, while training holds its CPUs (see above)
    # ray.data, when its own share of the cluster looks too small for a task a minute long; the
    # resource plan proves one mixing task per feed fits, and a real starvation (someone else holds
    # the CPUs) ends the run through the stall watch with its cause (stall.py)
    "Cluster resources are not enough to run any task from",
    "Reporting training result",  # ray.train, every report of every worker
    "Checkpoint successfully created at",
    "Wrote the latest version of all result files",  # ray.tune, at the end of every search
    "is illegal; using",  # tensorboardX renaming our metric names (`@` is not allowed there)
)


def verbose() -> bool:
    return os.environ.get(LOG_ENV, "").strip().lower() == "debug"


def configure(verbose_flag: bool = False) -> None:
    """The driver's logging: one short line per event, Ray's chatter off unless verbose.

    The switch is kept in the environment, so a local Ray instance started afterwards passes
    it to its workers (on a cluster, set ALSOVIEW_LOG in the job's runtime environment).
    """
    if verbose_flag:
        os.environ[LOG_ENV] = "debug"
    logging.basicConfig(
        level=logging.DEBUG if verbose() else logging.INFO,
        format="%(asctime)s alsoview: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose():
        _filter_handlers(("",))


class _RoutineRayMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in ROUTINE_RAY_MESSAGES)


def quiet_ray() -> None:
    """In this process: Ray Data's per-execution announcements and the routine Ray lines off.

    Filters go on the handlers (a logger's own filters do not see its children's records).
    """
    if verbose():
        return
    import ray.data

    context = ray.data.DataContext.get_current()
    context.print_on_execution_start = False
    context.enable_progress_bars = False
    _filter_handlers(("", "ray", "ray.data", "ray.train", "ray.tune"))
    _drop_routine_raylet_reports()
    # Tune's console reporter prints a boxed summary and a TensorBoard hint pointing into Ray's
    # session folder (gone with the session) whatever RunConfig's verbosity; its older reporter
    # is silent at verbosity 0. TrialLog says what matters; `tensorboard_hint` the right folder.
    os.environ.setdefault(TUNE_NEW_OUTPUT_ENV, "0")


TUNE_NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"


def tensorboard_hint(run_dir: object) -> str:
    """Where Tune's TensorBoard event files are: each trial's folder under the experiment's."""
    return f"learning curves: tensorboard --logdir {run_dir}  (pip install tensorboard)"


# The raylet's report that it started "N PYTHON worker processes", repeated at every multiple of
# the CPU count: a Tune trial, its Train controller, workers, feeders and mixing tasks are that many
# processes by design. Ray prints these reports to the driver's stdout itself, not through logging.
ROUTINE_RAYLET_REPORTS = ("worker processes have been started on node",)


def _drop_routine_raylet_reports() -> None:
    """Wrap the function Ray's driver prints the raylet's reports with, leaving out the routine ones."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "_alsoview_filtered", False):
        return

    def print_to_stdstream(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            lines = [line for line in data.get("lines", []) if not any(t in line for t in ROUTINE_RAYLET_REPORTS)]
            if not lines:
                return
            data = {**data, "lines": lines}
        printer(data, ignore_prefix)

    print_to_stdstream._alsoview_filtered = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


def _filter_handlers(logger_names: tuple[str, ...]) -> None:
    routine = _RoutineRayMessages()
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _RoutineRayMessages) for f in handler.filters):
                handler.addFilter(routine)


class Progress:
    """A periodic progress line for a long stage: done / total, rate and time left.

    Logs at most every `every` seconds (and once at the end), so a stage of any length gives a
    few lines, not a bar that a job log cannot render.
    """

    def __init__(self, stage: str, total: int | None, unit: str, every: float = 10.0) -> None:
        self.stage, self.total, self.unit, self.every = stage, total, unit, every
        self.done = 0
        self.start = self.last = time.perf_counter()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self.last >= self.every and (self.total is None or self.done < self.total):
            self.last = now
            log.info("%s", self.line(now))

    def finish(self) -> None:
        log.info("%s", self.line(time.perf_counter(), finished=True))

    def line(self, now: float, finished: bool = False) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if finished:
            return f"{self.stage}: {self.done:,} {self.unit} in {elapsed:.1f}s ({rate:,.0f} {self.unit}/s)"
        if self.total is None:  # a stream of unknown length: how far, how fast
            return f"{self.stage}: {self.done:,} {self.unit} so far, {rate:,.0f} {self.unit}/s"
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        share = self.done / max(self.total, 1)
        return (
            f"{self.stage}: {self.done:,}/{self.total:,} {self.unit} ({share:.0%}), "
            f"{rate:,.0f} {self.unit}/s, about {_duration(left)} left"
        )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown time"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
