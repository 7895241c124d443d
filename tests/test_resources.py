"""The resource plan: every reservation of train, compare and tune fits at once, or the run is
refused up front with the numbers and settings that do fit (no Ray here: plan level only)."""

from __future__ import annotations

import itertools
import re

import pytest

from alsoview.config import load_config
from alsoview.distributed.resources import (
    MIN_CPUS_PER_MIX_TASK,
    MIN_CPUS_PER_WORKER,
    TRIAL_CPU,
    plan_resources,
)
from alsoview.errors import UserError

COMMANDS = ("train", "compare", "tune")
CPU_COUNTS = (1, 2, 3, 4, 8, 16)
WORKERS = (1, 2, 3, 4)
GPU_COUNTS = (0, 2)


def _holds(plan, cluster) -> None:
    """What the plan promises: everything it places plus one mixing task per feed, at once."""
    reserved = {r.what: r for r in plan.reservations()}
    cpus = sum(r.count * r.cpus for r in reserved.values())
    assert cpus <= cluster["CPU"] + 1e-9, plan.summary()
    assert sum(r.count * r.gpus for r in reserved.values()) <= cluster.get("GPU", 0) + 1e-9
    runs = plan.runs
    assert reserved["training worker"].count == runs * plan.workers
    assert reserved["mixing task (one per feeder)"].count == runs * plan.workers  # one per feed
    assert reserved["epoch feeder actor"].count == runs * plan.workers
    assert reserved["Ray Train controller"].count == runs
    if plan.command != "train":
        assert reserved["Tune trial function"].count == runs and reserved["Tune trial function"].cpus == TRIAL_CPU
    assert plan.cpus_per_mix_task >= MIN_CPUS_PER_MIX_TASK
    assert plan.use_gpu or plan.cpus_per_worker >= MIN_CPUS_PER_WORKER
    assert plan.torch_threads >= 1 and runs >= 1


@pytest.mark.parametrize(
    "command,cpus,workers,gpus", list(itertools.product(COMMANDS, CPU_COUNTS, WORKERS, GPU_COUNTS))
)
def test_every_plan_fits_at_once_or_is_refused_with_settings_that_fit(command, cpus, workers, gpus):
    cluster = {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}
    config = load_config(None, [f"train.num_workers={workers}"])
    try:
        plan = plan_resources(config, cluster, command)
    except UserError as refused:
        message = str(refused)
        assert len(message.splitlines()) == 1
        has = re.search(r"(?:the cluster has|trials at once has) ([\d.]+)", message)
        assert has and float(has.group(1)) in (cpus, gpus), message  # the numbers: what there is
        nearest = re.search(r"nearest that fits: (\S+=\S+)", message)
        assert nearest, message
        fitted = plan_resources(load_config(None, [f"train.num_workers={workers}", nearest.group(1)]), cluster, command)
        _holds(fitted, cluster)
        return
    _holds(plan, cluster)


def test_the_readme_smoke_config_fits_two_cpus_under_every_command():
    """The split that hung: a trial function of 0.01 beside two workers of 0.75 left 0.49 CPU for
    a mixing task of 0.5. Now the plan counts the trial and one task per feed."""
    smoke = load_config("configs/smoke.yaml")
    assert smoke.train.num_workers == 2
    train = plan_resources(smoke, {"CPU": 2.0}, "train")
    assert (train.cpus_per_worker, train.cpus_per_mix_task, train.cpus_reserved) == (0.5, 0.5, 2.0)
    for command in ("tune", "compare"):
        plan = plan_resources(smoke, {"CPU": 2.0}, command)
        assert plan.runs == 1
        assert (plan.cpus_per_worker, plan.cpus_per_mix_task) == (0.5, 0.495)
        assert plan.cpus_reserved == pytest.approx(2.0)
        assert "1 trials x (trial 0.01 CPU + 2 workers x 0.5 CPU + 2 mixing tasks x 0.495 CPU)" in plan.summary()


def test_trials_run_side_by_side_as_far_as_they_fit():
    one_worker = load_config(None, ["tune.num_samples=8"])
    assert plan_resources(one_worker, {"CPU": 2.0}, "tune").runs == 2
    assert plan_resources(one_worker, {"CPU": 16.0, "GPU": 4.0}, "tune").runs == 4  # one GPU each
    two_gpu_workers = load_config(None, ["train.num_workers=2", "train.use_gpu=true"])
    assert plan_resources(two_gpu_workers, {"CPU": 16.0, "GPU": 4.0}, "tune").runs == 2
    assert plan_resources(load_config(None, ["tune.num_samples=1"]), {"CPU": 64.0}, "tune").runs == 1
    assert plan_resources(load_config(None, ["tune.max_concurrent_trials=3"]), {"CPU": 64.0}, "tune").runs == 3
    # num_samples by default follows the cluster: 4 per concurrent trial, at least 8
    assert plan_resources(load_config(None, []), {"CPU": 2.0}, "tune").num_samples == 8
    assert plan_resources(load_config(None, []), {"CPU": 16.0, "GPU": 4.0}, "tune").num_samples == 16


def test_settings_that_cannot_fit_are_refused_with_the_numbers_and_the_nearest_fit():
    with pytest.raises(UserError, match=r"needs 8 workers x 0.5 CPUs .* = 6 CPUs, the cluster has 2; "
                       r"nearest that fits: train.num_workers=2"):  # fmt: skip
        plan_resources(load_config(None, ["train.num_workers=8"]), {"CPU": 2.0}, "train")
    with pytest.raises(UserError, match=r"a trial needs 0.01 for the trial function \+ 2 workers x 1 CPUs .*"
                       r"nearest that fits: train.num_workers=1"):  # fmt: skip
        plan_resources(load_config(None, ["train.num_workers=2", "train.cpus_per_worker=1"]), {"CPU": 2.0}, "tune")
    with pytest.raises(UserError, match=r"nearest that fits: train.cpus_per_worker=1.75"):
        plan_resources(load_config(None, ["train.cpus_per_worker=2"]), {"CPU": 2.0}, "train")
    with pytest.raises(UserError, match=r"nearest that fits: sampling.cpus_per_task=1.5"):
        plan_resources(load_config(None, ["sampling.cpus_per_task=1.8"]), {"CPU": 2.0}, "train")
    two_gpus = load_config(None, ["train.use_gpu=true", "train.num_workers=2"])
    with pytest.raises(UserError, match=r"needs 2 GPUs .* the cluster has 1; nearest that fits: train.num_workers=1"):
        plan_resources(two_gpus, {"CPU": 8.0, "GPU": 1.0}, "tune")
    with pytest.raises(UserError, match=r"nearest that fits: a cluster with at least 0.76 CPUs"):
        plan_resources(load_config(None, []), {"CPU": 0.5}, "tune")


def test_a_users_split_is_kept_when_it_fits():
    config = load_config(None, ["train.cpus_per_worker=1", "sampling.cpus_per_task=0.1"])
    plan = plan_resources(config, {"CPU": 2.0}, "train")
    assert (plan.cpus_per_worker, plan.cpus_per_mix_task) == (1.0, 0.1)
