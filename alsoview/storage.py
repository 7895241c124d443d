"""Writing shared outputs safely: one writer at a time, and a directory appears whole or not at all.

Several jobs may prepare the same dataset at once (two submissions, two local runs). Each
output directory is guarded by a lock file beside it, is written into a staging folder beside
it, and is published by renames (the old one is moved aside, the new one moved in, then the old
one removed), so a reader never sees a half-written dataset.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from alsoview.errors import UserError

log = logging.getLogger("alsoview")


@contextlib.contextmanager
def locked(target: Path, what: str) -> Iterator[None]:
    """Hold `<target>.lock` (an flock) while making `target`; waits, saying so, if another process has it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is making %s (%s)", what, target)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_replaceable(out: Path, marker: str, what: str) -> None:
    """`out` may be written: absent, empty, or holding a previous `what` (it has `marker`).

    Anything else is someone's folder and is refused before any work; so is a place we cannot write.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a directory: choose another output directory for the {what}")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise UserError(
            f"{out} is not empty and holds no {what} (no {marker}): refusing to replace it; "
            f"choose an empty or new directory"
        )
    _check_can_create_in(out, what)


def check_writable_file(out: Path, what: str) -> None:
    """`out` can be written as a file: checked before the work that produces it, not after."""
    if out.is_dir():
        raise UserError(f"{out} is a directory: give a file name for the {what}")
    _check_can_create_in(out, what)


def _check_can_create_in(out: Path, what: str) -> None:
    """Create and remove a probe file where `out` will go: permission bits say nothing to root,
    and a read-only mount or /proc refuses only the real write."""
    parent = _existing_ancestor(out.parent)
    if not parent.is_dir():
        raise UserError(f"cannot write the {what} to {out}: {parent} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {out}: {parent} is not writable ({exc.strerror})") from None


def staging_beside(out: Path) -> Path:
    """A fresh hidden folder next to `out` (same file system, so publishing is a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path) -> None:
    """Move `staging` to `out`; an existing `out` is moved aside first and removed only after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)  # put the previous one back: never leave nothing
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
