"""No silent stall: a run starved by someone else's actor stops after train.stall_timeout with one
line saying what waited and who holds the CPUs; the watch's pieces on their own."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from alsoview.distributed.stall import ProgressBoard, WorkerBeat, _counted, _cpus


def test_the_board_counts_idle_time_from_the_last_progress_of_any_worker():
    board = ProgressBoard()
    assert board.snapshot().placed is False
    time.sleep(0.05)
    board.group_placed()  # the worker group is up: its start was not idle time
    assert board.snapshot().placed is True and board.snapshot().idle_seconds < 0.05
    board.worker_started(0)
    board.waiting(1, "epoch 0's mixed samples from its feed")
    time.sleep(0.05)
    snapshot = board.snapshot()
    assert snapshot.started == [0] and snapshot.idle_seconds >= 0.05
    assert snapshot.waiting[1][0] == "epoch 0's mixed samples from its feed" and snapshot.waiting[1][1] >= 0.05
    board.progressed(1, 7)
    snapshot = board.snapshot()
    assert snapshot.idle_seconds < 0.05 and snapshot.steps == {1: 7} and 1 not in snapshot.waiting
    assert board.abort() is False  # no controller registered: nothing to stop


def test_a_worker_without_a_board_reports_nothing_and_does_not_fail():
    beat = WorkerBeat(None, 0)
    beat.waiting("x")
    beat.step(1)
    beat.progressed()
    assert beat.steps == 1


def test_cpus_are_read_from_plain_and_placement_group_requests():
    assert _cpus({"CPU": 0.5}) == 0.5
    assert _cpus({"CPU_group_0_abc": 0.75, "CPU_group_abc": 0.75, "bundle_group_abc": 0.001}) == 0.75
    assert _cpus(None) == 0.0
    assert _counted(Counter({("Hog", 1.6): 1, ("RayTrainWorker", 0.5): 2})) == (
        "2 x RayTrainWorker (0.5 CPU), 1 x Hog (1.6 CPU)"
    )


def test_a_group_that_is_up_but_never_began_is_not_called_unplaced(ray_session):
    """The board knows the worker group is up: a worker slow to begin its loop is named as such,
    with the setting that gives it longer, never as a worker that found no CPUs."""
    from alsoview.distributed.resources import ResourcePlan
    from alsoview.distributed.stall import Snapshot, diagnose

    plan = ResourcePlan("train", 2.0, 0.0, 1, 2, False, 0.75, 0.25, 1)
    up = diagnose(Snapshot(20.0, True, [0], {}, {}), plan, 15, "slow")
    assert "1 of its 2 training workers were placed but did not begin their training loop" in up
    assert "if they only start slowly, raise train.stall_timeout" in up and "never placed" not in up
    unplaced = diagnose(Snapshot(20.0, False, [], {}, {}), plan, 15, "starved")
    assert "2 of its 2 training workers (0.75 CPU each) were never placed" in unplaced


def _all_cpus_come_back(ray) -> None:
    """The stopped run holds nothing, no placement group included (the hog's CPUs return once Ray
    has killed it)."""
    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0) < 1.99 and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) >= 1.99, ray.available_resources()


def _hog(ray, cpus: float):
    """Someone else's actor, holding CPUs of the cluster a run joins (defined here: Ray ships a
    class of a test module by value only when it is local)."""

    class Hog:
        def ready(self) -> bool:
            return True

    hog = ray.remote(num_cpus=cpus)(Hog).remote()
    ray.get(hog.ready.remote(), timeout=60)
    return hog


def test_a_run_whose_feed_cannot_get_a_cpu_stops_with_what_waited_and_who_holds_the_cpus(smoke_config, capsys):
    """One worker places (1.5 of 2 CPUs), but 0.4 CPU held elsewhere leaves its mixing task (0.5)
    no room: the run stops after the stall timeout, exit code 1, with the diagnosis. (The timeout
    is also Ray Train's worker start timeout: below about 10 s a loaded machine can fail to start
    the worker in time, and the run stops as unplaced instead.)"""
    import ray

    from alsoview.cli import main

    hog = _hog(ray, 0.4)
    try:
        code = main(
            [
                "train",
                "--config",
                "configs/smoke.yaml",
                # its outputs resolve under the suite's storage root, where smoke_config prepared its data
                "train.run_name=starved-feed",
                "train.num_workers=1",
                "train.stall_timeout=15",
            ]
        )
    finally:
        ray.kill(hog)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    # the CLI's own line; a Ray worker line of an earlier test's run can still arrive after it
    line = next((text for text in reversed(err) if text.startswith("alsoview: ")), "")
    assert line.startswith("alsoview: failed: starved-feed stalled: no training step for 15s (train.stall_timeout)")
    assert "worker 0 waited" in line and "for epoch 0's mixed samples from its feed" in line
    assert "the cluster has 2 CPUs" in line and "Hog (0.4 CPU)" in line
    assert "waiting for CPUs: 1 x MapBatches(as_arrow_table) (0.5 CPU)" in line  # the mixing task
    assert "sampling.cpus_per_task" in line and "train.stall_timeout=0" in line
    assert "no checkpoint was written, so running it again starts over" in line
    _all_cpus_come_back(ray)


def test_a_run_whose_workers_are_never_placed_stops_with_the_reason(smoke_config):
    import dataclasses

    import ray

    from alsoview.distributed.stall import StallError
    from alsoview.distributed.train import train

    config = dataclasses.replace(
        smoke_config,
        train=dataclasses.replace(
            smoke_config.train, num_workers=1, run_name="starved-workers", stall_timeout=6, epochs=1
        ),
    )
    hog = _hog(ray, 1.0)
    try:
        with pytest.raises(StallError) as stalled:
            train(config)
    finally:
        ray.kill(hog)
    _all_cpus_come_back(ray)
    message = str(stalled.value)
    assert "starved-workers stalled: no training step for 6s" in message
    assert "1 of its 1 training workers (1.5 CPU each) were never placed" in message
    assert "Hog (1 CPU)" in message and "lower train.num_workers or train.cpus_per_worker" in message


# ---------------------------------------------------------------- every stage: the driver's waits


def test_a_watched_pipeline_hands_over_every_batch_in_order():
    from alsoview.distributed.stall import watched

    assert list(watched(lambda: iter(range(5)), 30, lambda: "unused")) == [0, 1, 2, 3, 4]
    assert list(watched(lambda: iter(range(3)), 0, lambda: "unused")) == [0, 1, 2]  # 0: no watch at all


def test_a_watched_pipeline_raises_the_stage_own_error():
    from alsoview.distributed.stall import watched

    def failing():
        yield 1
        raise ValueError("bad block")

    seen = []
    with pytest.raises(ValueError, match="bad block"):
        for batch in watched(failing, 30, lambda: "unused"):
            seen.append(batch)
    assert seen == [1]


def test_a_pipeline_that_stops_arriving_ends_in_the_diagnosis_and_is_stopped_where_it_waits(monkeypatch):
    """What waits for a task that is never placed: the stage ends with its line, and the pipeline
    (Ray Data's iterator, waiting in a Python loop) is ended too, so it asks nothing more; while
    all it asked for is placed (actors starting on a loaded node) it is not stalled."""
    from alsoview.distributed import stall
    from alsoview.distributed.stall import StallError, watched

    ended = []

    def starved():
        try:
            yield "first"
            while True:  # as Ray Data's get_output_blocking polls its queue
                time.sleep(0.01)
        finally:
            ended.append(True)

    asked = []

    def waits_on_cluster() -> bool:  # Ray's state: first all placed (starting), then waiting for CPUs
        asked.append(True)
        return len(asked) > 1

    monkeypatch.setattr(stall, "waits_on_cluster", waits_on_cluster)
    seen = []
    with pytest.raises(StallError, match="^prepare stalled: nothing for a while$"):
        for batch in watched(starved, 0.3, lambda: "prepare stalled: nothing for a while"):
            seen.append(batch)
    assert seen == ["first"] and ended == [True] and len(asked) == 2  # placed but slow was no stall


def test_a_search_whose_trials_wait_while_none_runs_stops_with_what_waited(monkeypatch):
    from types import SimpleNamespace

    from alsoview.distributed import tune
    from alsoview.distributed.resources import ResourcePlan
    from alsoview.distributed.stall import StallError

    monkeypatch.setattr(tune, "stalled_line", lambda stage, nothing, timeout, waited, change, gpus: f"{stage}|{waited}")
    placed = [False]
    monkeypatch.setattr(tune, "waits_on_cluster", lambda: not placed[0])
    plan = ResourcePlan("tune", 2.0, 0.0, 2, 1, False, 0.75, 0.25, 1, num_samples=4)
    watch = tune.SearchWatch("search", 10, plan)
    watch.setup()
    pending, running = SimpleNamespace(status="PENDING"), SimpleNamespace(status="RUNNING")
    watch.idle.last -= 100  # long past the timeout, as if nothing had happened for 100 s
    watch.on_step_end(1, [running, pending])  # one runs: its training's own watch looks after it
    watch.on_step_end(2, [])  # no trial yet: nothing waits
    watch.idle.last -= 100
    placed[0] = True  # their resources granted, the trials' actors starting: not a stall
    watch.on_step_end(3, [pending])
    placed[0] = False
    watch.idle.last -= 100
    with pytest.raises(StallError) as stalled:
        watch.on_step_end(3, [pending, pending, SimpleNamespace(status="TERMINATED")])
    assert str(stalled.value).startswith("search|2 trial(s) waited to be placed, each asking 0.01 CPU")
    watch.setup()  # a restored search starts its clock again
    watch.on_step_end(4, [pending])


def test_a_trial_whose_training_stalled_stops_the_search_with_its_line(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import cloudpickle

    from alsoview.distributed import tune
    from alsoview.distributed.resources import ResourcePlan
    from alsoview.distributed.stall import StallError

    plan = ResourcePlan("tune", 2.0, 0.0, 1, 1, False, 1.5, 0.5, 1, num_samples=4)
    watch = tune.SearchWatch("search", 10, plan)
    failed = tmp_path / "error.pkl"
    failed.write_bytes(cloudpickle.dumps(RuntimeError("wrapped")))
    watch.on_trial_error(1, [], SimpleNamespace(trial_id="a", pickled_error_file=str(failed)))
    watch.on_step_end(1, [])  # not a stall: the search goes on
    # the trial's process could not read Ray's state; the search's driver reads it instead
    monkeypatch.setattr(tune, "holders", lambda: "held: 1 x Hog (1.6 CPU)")
    inner = StallError(
        "trial-b stalled: no training step for 10s (train.stall_timeout): ...; the cluster has 2 CPUs, 0.38 free; "
        "who holds them is unknown (Ray's state API did not answer: ConnectionError); free those CPUs"
    )

    class RayTaskStallError(StallError):  # Ray wraps a task's error in a class derived from its own
        pass

    outer = RayTaskStallError("ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1, ...)")
    outer.cause = inner  # what the trial raised, pickled with Ray's wrapping
    failed.write_bytes(cloudpickle.dumps(outer))
    watch.on_trial_recover(2, [], SimpleNamespace(trial_id="b", pickled_error_file=str(failed)))
    with pytest.raises(
        StallError, match=r"^search stalled: trial b's training stopped: trial-b stalled: no training"
    ) as e:
        watch.on_step_end(2, [])
    assert "0.38 free; held: 1 x Hog (1.6 CPU); free those CPUs" in str(e.value)
