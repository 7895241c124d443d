"""A progress bar for a training run watched from a terminal.

The workers already tell the run's `ProgressBoard` (stall.py) how many optimiser steps they have
taken; a thread beside `fit()` reads rank 0's count once a second and draws it as a tqdm bar on
stderr. Only when stderr is a terminal: in a log file the epoch lines are the progress, and a bar
there would be a line of carriage returns.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Callable, TextIO

from alsoview.config import Config
from alsoview.training.batches import BatchPlan

log = logging.getLogger("alsoview")

POLL_SECONDS = 1.0


def planned_steps(config: Config, n_positives: int, first_epoch: int = 0) -> tuple[int, int]:
    """(steps already taken before `first_epoch`, steps of every epoch of the run): the bar's start
    and end, from the same plan the workers follow."""
    plan = BatchPlan.of(config, n_positives, config.train.num_workers)
    steps = [plan.steps(epoch) for epoch in range(config.train.epochs)]
    return sum(steps[:first_epoch]), sum(steps)


def on_a_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class ProgressBar:
    """A tqdm bar of a run's steps, redrawn from `read_steps()` (rank 0's steps in this attempt)
    until the context ends. A failed read ends the bar quietly: the run's own lines say why."""

    def __init__(
        self, name: str, read_steps: Callable[[], int], done: int, total: int, stream: TextIO | None = None
    ) -> None:
        self.name, self.read_steps, self.done, self.total = name, read_steps, done, total
        self.stream = sys.stderr if stream is None else stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw, name=f"progress-{name}", daemon=True)

    def __enter__(self) -> ProgressBar:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _draw(self) -> None:
        from tqdm import tqdm

        bar = None  # drawn from the first step on, so its rate and time left leave out the start-up
        try:
            while not self._stop.wait(POLL_SECONDS):
                try:
                    steps = self.read_steps()
                except Exception as exc:  # the board ended with the run
                    log.debug("progress bar of %s ended: %s", self.name, exc)
                    return
                if bar is None and steps > 0:
                    bar = tqdm(
                        total=self.total, initial=self.done, desc=self.name, unit="step", file=self.stream, leave=False
                    )
                if bar is not None:
                    bar.n = min(self.total, self.done + steps)
                    bar.refresh()
        finally:
            if bar is not None:
                bar.close()
