"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


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
