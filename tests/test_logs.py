"""What the user reads: Ray's routine reports kept out, everything else through, no colour off a terminal."""

from __future__ import annotations

import logging
import os

import pytest

from alsoview import logs


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.delenv(logs.LOG_ENV, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv(logs.COLOR_PREFIX_ENV, raising=False)


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("ray", logging.INFO, __file__, 1, message, args, None)


def test_the_raylets_worker_counts_and_a_trials_placement_group_cleanup_are_routine_nothing_else(quiet, monkeypatch):
    routine = "WARNING: 12 PYTHON worker processes have been started on node: abc with address: 127.0.0.1."
    assert logs.routine_ray_print({"pid": "raylet"}, routine)
    assert not logs.routine_ray_print({"pid": "raylet"}, "the node ran out of memory")
    assert not logs.routine_ray_print({"pid": 4321}, routine)  # a worker's own line
    cleaner = "Detected that the Ray Train controller actor (39f2) is dead. Cleaning up placement group = [PG(4b)]"
    assert logs.routine_ray_print({"pid": 4791, "actor_name": "PlacementGroupCleaner"}, cleaner)
    assert not logs.routine_ray_print({"pid": 4791, "actor_name": "PlacementGroupCleaner"}, "Failed to query Ray")
    monkeypatch.setenv(logs.LOG_ENV, "debug")
    assert not logs.routine_ray_print({"pid": "raylet"}, routine)  # verbose: everything


def test_ray_inits_own_start_lines_are_routine_and_a_disabled_token_warning_is_not(quiet):
    routine = logs._RoutineRayMessages()
    token_on = (
        "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out. "
        "For more information, see https://docs.ray.io/en/latest/ray-security/token-auth.html"
    )
    assert not routine.filter(_record(token_on))
    assert not routine.filter(_record("Started a local Ray instance. View the dashboard at %s%s", "\x1b[1m", "x"))
    assert routine.filter(_record("Token authentication is disabled for this Ray cluster. Anyone with network"))
    assert routine.filter(_record("Connected to Ray cluster. View the dashboard at http://10.0.0.1:8265"))


def test_colour_codes_are_taken_out_of_a_record_and_its_arguments():
    record = _record(
        "View the dashboard at %s%s%s %s%s", "\x1b[1m", "\x1b[32m", "http://127.0.0.1:8265", "\x1b[39m", "\x1b[22m"
    )
    assert logs._PlainText().filter(record)
    assert record.getMessage() == "View the dashboard at http://127.0.0.1:8265 "
    assert (
        logs.without_ansi("\x1b[36m(TrainController pid=1)\x1b[0m Requesting") == "(TrainController pid=1) Requesting"
    )


def test_no_colour_off_a_terminal_or_with_no_color(quiet, monkeypatch):
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdout", Tty())
    monkeypatch.setattr("sys.stderr", Tty())
    assert logs.colour_allowed()
    monkeypatch.setenv("NO_COLOR", "1")
    assert not logs.colour_allowed()
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr("sys.stderr", object())  # redirected: no isatty, or not a terminal
    assert not logs.colour_allowed()
    logs.plain_ray_prefixes()
    assert os.environ[logs.COLOR_PREFIX_ENV] == "0"  # Ray's worker prefixes uncoloured


def test_a_colour_prefix_the_user_set_is_kept(quiet, monkeypatch):
    monkeypatch.setenv(logs.COLOR_PREFIX_ENV, "1")
    logs.plain_ray_prefixes()  # pytest captures the streams: not a terminal
    assert os.environ[logs.COLOR_PREFIX_ENV] == "1"


def test_the_filters_go_on_every_handler_once_and_verbose_keeps_ray_lines_but_not_colour(quiet, monkeypatch):
    logger = logging.getLogger("alsoview-test-handlers")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        logs._filter_handlers(("alsoview-test-handlers",))
        logs._filter_handlers(("alsoview-test-handlers",))
        kinds = sorted(type(f).__name__ for f in handler.filters)
        assert kinds == ["_PlainText", "_RoutineRayMessages"]
        handler.filters.clear()
        monkeypatch.setenv(logs.LOG_ENV, "debug")
        logs._filter_handlers(("alsoview-test-handlers",))
        assert [type(f).__name__ for f in handler.filters] == ["_PlainText"]
    finally:
        logger.removeHandler(handler)


def test_ray_trains_console_lines_only_when_verbose(quiet, monkeypatch):
    assert logs.ray_train_log_level() == "WARNING"
    monkeypatch.setenv(logs.LOG_ENV, "debug")
    assert logs.ray_train_log_level() == "INFO"
