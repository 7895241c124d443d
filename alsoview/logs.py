"""What the user reads: our log lines, progress of long stages, and Ray's routine chatter kept out.

Ray Data announces every execution ("Starting execution of Dataset ...", its plan, "Progress
bars disabled"), Ray Train logs every report and checkpoint from every worker, and a feed
running beside training warns that no CPU is free at that instant (it is expected: training
holds its share, the mixing tasks wait their turn). Per epoch that is a screenful. `quiet_ray`
drops exactly those messages in the process it runs in (driver, feeder, training worker);
`ALSOVIEW_LOG=debug` (or `--verbose`) brings everything back. Ray Train's own INFO lines (the
controller's "Requesting resources", the worker group's start) stay in Ray's log files
(`ray_train_log_level`). What Ray leaves out of the terminal is in its session's log folder
(`<Ray temp dir>/session_latest/logs`).

Colour: none unless both stdout and stderr are terminals and NO_COLOR is unset. Ray's prefixes
of its workers' lines follow RAY_COLOR_PREFIX (set to 0 here otherwise), and Ray's own log lines
lose their escape codes in the same case (`_PlainText`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
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
    # ray.init starting a private instance: alsoview's own line says it, with the dashboard's
    # address and whether token authentication is on (runtime.init_ray)
    "Started a local Ray instance.",
    "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled",
)


def verbose() -> bool:
    return os.environ.get(LOG_ENV, "").strip().lower() == "debug"


def configure(verbose_flag: bool = False) -> None:
    """The driver's logging: one short line per event, Ray's chatter off unless verbose.

    The switches are kept in the environment, so a local Ray instance started afterwards passes
    them to its workers (on a cluster, set ALSOVIEW_LOG in the job's runtime environment).
    """
    if verbose_flag:
        os.environ[LOG_ENV] = "debug"
    plain_ray_prefixes()
    logging.basicConfig(
        level=logging.DEBUG if verbose() else logging.INFO,
        format="%(asctime)s alsoview: %(message)s",
        datefmt="%H:%M:%S",
    )
    _filter_handlers(("",))
    for library in QUIET_LIBRARIES:  # their debug lines are about themselves (fonts, files), even with -v
        logging.getLogger(library).setLevel(logging.WARNING)


QUIET_LIBRARIES = ("matplotlib", "PIL", "fsspec", "filelock", "urllib3", "asyncio", "h5py")

COLOR_PREFIX_ENV = "RAY_COLOR_PREFIX"  # Ray's switch for its workers' line prefixes: "0" plain


def colour_allowed() -> bool:
    """Colour only where someone watches a terminal: stdout and stderr both ttys, NO_COLOR unset."""
    if os.environ.get("NO_COLOR"):
        return False
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def plain_ray_prefixes() -> None:
    """Ray's `(TrainController pid=...)` prefixes without colour codes unless `colour_allowed`
    (Ray reads the switch at every line; a value the user set is kept)."""
    if not colour_allowed():
        os.environ.setdefault(COLOR_PREFIX_ENV, "0")


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def without_ansi(text: str) -> str:
    return ANSI_ESCAPE.sub("", text)


class _PlainText(logging.Filter):
    """A record's colour codes removed (Ray colours the dashboard's address, for one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = without_ansi(message), ()
        return True


class _RoutineRayMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in ROUTINE_RAY_MESSAGES)


RAY_LOGGERS = ("", "ray", "ray.data", "ray.train", "ray.tune")


def quiet_ray() -> None:
    """In this process: Ray's log lines without colour codes off a terminal, and (unless verbose)
    Ray Data's per-execution announcements and the routine Ray lines off.

    Safe before and after `ray.init` (the driver calls it before, so the lines `ray.init` itself
    logs are filtered too). Filters go on the handlers (a logger's own filters do not see its
    children's records).
    """
    plain_ray_prefixes()
    _filter_handlers(RAY_LOGGERS)
    if verbose():
        return
    import ray.data

    context = ray.data.DataContext.get_current()
    context.print_on_execution_start = False
    context.enable_progress_bars = False
    # Tune's console reporter prints a boxed summary and a TensorBoard hint pointing into Ray's
    # session folder (gone with the session) whatever RunConfig's verbosity; its older reporter
    # is silent at verbosity 0. TrialLog says what matters; `tensorboard_hint` the right folder.
    os.environ.setdefault(TUNE_NEW_OUTPUT_ENV, "0")


TUNE_NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"


def ray_train_log_level() -> str:
    """Ray Train's console level (its RunConfig's `logging_config`): its INFO lines (resources
    requested, the worker group started, every report) only when verbose. Its system log files
    in Ray's session folder keep every level."""
    return "INFO" if verbose() else "WARNING"


def tensorboard_hint(run_dir: object, figure: object = None) -> str:
    """Where the TensorBoard event files are (Tune's: each trial's folder under the experiment's),
    after the learning curves' figure when there is one (a train run's)."""
    before = f"{figure}; " if figure is not None else ""
    return f"learning curves: {before}tensorboard --logdir {run_dir}  (pip install tensorboard)"


# Lines Ray's driver prints for its raylet and its actors itself, not through logging, as (who,
# text): the raylet's report that it started "N PYTHON worker processes", repeated at every
# multiple of the CPU count (a Tune trial, its Train controller, workers, feeders and mixing tasks
# are that many processes by design); Ray Train's placement-group cleaner's warning that a run's
# controller is gone, at the end of every Tune trial (Tune ends the trial, the cleaner frees its
# CPUs). runtime.init_ray has the driver leave them out (ray_internals.drop_driver_prints).
ROUTINE_RAY_PRINTS = (
    ("raylet", "worker processes have been started on node"),
    ("PlacementGroupCleaner", "Cleaning up placement group"),
)


def routine_ray_print(data: dict, line: str) -> bool:
    """Whether a line Ray's driver is about to print is one of ROUTINE_RAY_PRINTS (never when verbose)."""
    if verbose():
        return False
    who = data.get("actor_name") or data.get("pid")
    return any(who == source and text in line for source, text in ROUTINE_RAY_PRINTS)


def _filter_handlers(logger_names: tuple[str, ...]) -> None:
    """Colour codes off every handler of these loggers when colour is not allowed; the routine Ray
    messages off them unless verbose."""
    wanted: list[logging.Filter] = []
    if not colour_allowed():
        wanted.append(_PlainText())
    if not verbose():
        wanted.append(_RoutineRayMessages())
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            for added in wanted:
                if not any(type(f) is type(added) for f in handler.filters):
                    handler.addFilter(added)


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
