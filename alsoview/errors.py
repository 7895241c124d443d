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
