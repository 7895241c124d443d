"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

ERROR_DIR_ENV = "ALSOVIEW_ERROR_DIR"  # where internal errors' tracebacks go (default: the temp folder)


class UserError(Exception):
    """A mistake the user can fix (missing file, bad config value, wrong file format): exit code 2."""


class RunFailedError(Exception):
    """A run that failed for another reason (a lost worker, a crash): exit code 1. Its message says
    what failed, where the details were written, and how to resume."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line (its type when it has none), for one-line reports."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def own_error_in(exc: BaseException | None) -> UserError | RunFailedError | None:
    """The UserError or RunFailedError an exception from Ray was caused by (Ray wraps what a task,
    actor or training worker raised in its own errors, as `cause` or `__cause__`), if any."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, (UserError, RunFailedError)):
            return exc
        exc, seen = exc.__cause__ or getattr(exc, "cause", None), seen + 1
    return None


def check_setting(ok: bool, key: str, expected: str, got: object) -> None:
    """A config value out of its range, as one line naming the key: `config: KEY must be ...`."""
    if not ok:
        raise UserError(f"config: {key} must be {expected} (got {got!r})")


def write_traceback(exc: BaseException, argv: object) -> Path:
    """Write an unforeseen exception's traceback and the command that met it to a file of its own
    (`$ALSOVIEW_ERROR_DIR`, else `<temp>/alsoview-errors`), for the one line that names it."""
    folder = Path(os.environ.get(ERROR_DIR_ENV) or Path(tempfile.gettempdir()) / "alsoview-errors")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path.write_text(f"command: alsoview {argv}\n\n{text}", encoding="utf-8")
    return path


def internal_error_line(exc: BaseException, path: Path) -> str:
    """One line for an exception that is not the project's own: what it was and where its traceback is."""
    return (
        f"internal error: {type(exc).__name__}: {first_line(exc)} (the traceback is in {path}; "
        "please report it with that file)"
    )
