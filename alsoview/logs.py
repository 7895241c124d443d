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
    "Reporting training result",  # ray.train, every report of every worker
    "Checkpoint successfully created at",
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
