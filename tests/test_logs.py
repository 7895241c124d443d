"""What the user reads: Ray's routine reports kept out, everything else through."""

from __future__ import annotations

from alsoview.logs import _drop_routine_raylet_reports


def test_the_raylets_worker_count_reports_are_dropped_and_its_other_reports_printed(capsys):
    from ray._private import worker

    _drop_routine_raylet_reports()
    _drop_routine_raylet_reports()  # a second call does not wrap twice
    routine = "WARNING: 12 PYTHON worker processes have been started on node: abc with address: 127.0.0.1."
    other = "the node ran out of memory"
    worker.print_to_stdstream({"lines": [routine, other], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    worker.print_to_stdstream({"lines": [routine], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    out = capsys.readouterr().out
    assert other in out and "worker processes have been started" not in out
