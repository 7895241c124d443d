"""Writing shared outputs safely: one writer at a time, and a directory appears whole or not at all.

Several jobs may prepare the same dataset at once (two submissions, two local runs). Each
output directory is guarded by a lock file beside it, is written into a staging folder beside
it, and is published by renames (the old one is moved aside, the new one moved in, then the old
one removed), so a reader never sees a half-written dataset. A writer killed on the way leaves
only hidden folders beside the output; the next writer, holding the lock, clears them
(`clear_leftovers`). A single file is replaced the same way (`replace_file`). The locks are
flocks: the kernel releases them when their process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

from alsoview.errors import UserError

log = logging.getLogger("alsoview")


# The targets this thread holds a lock on (with how many nested holders): a flock taken twice
# through two file handles would wait on itself; other threads wait their turn as processes do.
_THREAD = threading.local()


@contextlib.contextmanager
def locked(target: Path, what: str) -> Iterator[None]:
    """Hold `<target>.lock` (an flock) while making `target`; waits, saying so, if another process has it.

    A nested `locked` of the same target in the same thread (ensure_prepared, then prepare) passes.
    """
    key, held = target.resolve(), _held()
    if key in held:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a+") as handle:
        if not _try_lock(handle):
            log.info("waiting for another process%s that is making %s (%s)", _holder(handle), what, target)
            fcntl.flock(handle, fcntl.LOCK_EX)
        held[key] = 1
        try:
            _sign(handle)
            yield
        finally:
            del held[key]
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def held_or_refused(lock_file: Path, what: str, advice: str) -> Iterator[None]:
    """Hold `lock_file` (an flock) for the block, or refuse at once in one line naming `what`, the
    holder's process id and `advice`: for work that must not wait its turn (a second process
    training one run would resume it, then both would write its checkpoints)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        if not _try_lock(handle):
            raise UserError(f"{what} is in use: another process{_holder(handle)} holds {lock_file}; {advice}")
        try:
            _sign(handle)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _held() -> dict[Path, int]:
    if not hasattr(_THREAD, "held"):
        _THREAD.held = {}
    return _THREAD.held


def _try_lock(handle: Any) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _sign(handle: Any) -> None:
    """The holder's process id in the lock file, for the message of whoever finds it taken."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()


def _holder(handle: Any) -> str:
    handle.seek(0)
    pid = handle.read().strip()
    return f" (pid {pid})" if pid.isdigit() else ""


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


def clear_leftovers(out: Path) -> list[Path]:
    """What writers of `out` killed on the way left beside it, cleared; call it holding `out`'s lock.

    A staging folder or file (`.<out>.partial-*`) is never trusted, however complete it looks: it is
    removed. A previous output moved aside (`.<out>.old-*`) is put back when `out` itself is
    missing (the writer died between publish's two renames), else removed. Returns what was removed.
    """
    removed = []
    if not out.exists():
        aside = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
        if aside:
            aside[-1].rename(out)
            log.info("put back %s: a writer was stopped while replacing it", out)
    for leftover in [*out.parent.glob(f".{out.name}.partial-*"), *out.parent.glob(f".{out.name}.old-*")]:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)  # replace_file's temporary file
        removed.append(leftover)
    if removed:
        log.info("removed %d leftover(s) of an interrupted writer beside %s", len(removed), out)
    return removed


@contextlib.contextmanager
def replace_file(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; it replaces `path` (one rename) only when the block
    ends without an error, so a kill or a full disk mid-write leaves the previous file whole."""
    temporary = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
