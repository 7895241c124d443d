"""The terminal's progress bar: drawn from the board's step counts, from where a resumed run
stands to every epoch's steps, and never written where nobody watches a terminal."""

from __future__ import annotations

import io
import time

from alsoview.config import load_config
from alsoview.distributed import progress
from alsoview.training.batches import BatchPlan


def test_the_bar_spans_the_steps_of_every_epoch_and_starts_where_a_resume_does():
    config = load_config("configs/smoke.yaml")
    plan = BatchPlan.of(config, 5000, config.train.num_workers)
    every = [plan.steps(epoch) for epoch in range(config.train.epochs)]
    assert progress.planned_steps(config, 5000) == (0, sum(every))
    assert progress.planned_steps(config, 5000, first_epoch=2) == (every[0] + every[1], sum(every))


def test_the_bar_follows_the_steps_it_reads(monkeypatch):
    monkeypatch.setattr(progress, "POLL_SECONDS", 0.02)
    counts = iter([3, 7, 12] + [12] * 1000)
    stream = io.StringIO()
    with progress.ProgressBar("f05", lambda: next(counts), done=5, total=40, stream=stream):
        time.sleep(0.3)
    drawn = stream.getvalue()
    assert "f05" in drawn and "17/40" in drawn  # 5 steps before this attempt, 12 in it


def test_a_bar_ends_quietly_when_the_board_is_gone(monkeypatch):
    monkeypatch.setattr(progress, "POLL_SECONDS", 0.02)

    def gone() -> int:
        raise RuntimeError("actor died")

    with progress.ProgressBar("f05", gone, done=0, total=10, stream=io.StringIO()) as bar:
        time.sleep(0.2)
        assert not bar._thread.is_alive()


def test_only_a_terminal_gets_a_bar():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress.on_a_terminal(Terminal()) and not progress.on_a_terminal(io.StringIO())
