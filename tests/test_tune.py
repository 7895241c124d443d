"""Tuning: trial planning, the search space, and one real Tune run with Optuna and ASHA."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from alsoview.config import flatten_search_space, load_config
from alsoview.errors import UserError
from alsoview.resources import resolve_resources
from alsoview.tune import param_space, plan_trials


def test_trials_are_planned_so_none_waits_for_cpus():
    config = load_config(None, ["tune.num_samples=8"])
    plan = plan_trials(config, {"CPU": 2.0})
    assert plan.concurrency == 2
    assert plan.concurrency * plan.budget["CPU"] <= 2.0 + 1e-9
    resources = resolve_resources(config, plan.budget)  # each trial's share passes the training rule
    assert resources.cpus_per_worker + config.sampling.cpus_per_task <= plan.budget["CPU"]
    assert plan_trials(config, {"CPU": 16.0, "GPU": 4.0}).concurrency == 4  # one GPU worker per trial
    two_gpu_workers = load_config(None, ["train.num_workers=2", "train.use_gpu=true"])
    assert plan_trials(two_gpu_workers, {"CPU": 16.0, "GPU": 4.0}).concurrency == 2
    assert plan_trials(load_config(None, ["tune.num_samples=1"]), {"CPU": 64.0}).concurrency == 1
    # num_samples by default follows the cluster: 4 per concurrent trial, at least 8
    assert plan_trials(load_config(None, []), {"CPU": 2.0}).num_samples == 8
    assert plan_trials(load_config(None, []), {"CPU": 16.0, "GPU": 4.0}).num_samples == 16
    with pytest.raises(UserError, match="GPUs"):
        plan_trials(load_config(None, ["train.use_gpu=true", "train.num_workers=2"]), {"CPU": 8.0, "GPU": 1.0})
    with pytest.raises(UserError, match=r"a trial needs 2 workers x 0.5 CPUs \+ 0.5 for Ray Data = 1.5 CPUs"):
        plan_trials(load_config(None, ["train.num_workers=2"]), {"CPU": 1.0})


def test_search_space_from_config():
    config = load_config(
        None,
        ["tune.search_space.model.dropout=null", "tune.search_space.sampling.also_view_fraction={uniform: [0.1, 0.9]}"],
    )
    flat = flatten_search_space(config.tune.search_space)
    assert "model.dropout" not in flat and flat["sampling.also_view_fraction"] == {"uniform": [0.1, 0.9]}
    assert "train.learning_rate" in flat  # the rest of the default space is kept
    space = param_space(config)
    assert space["sampling.also_view_fraction"].lower == 0.1
    with pytest.raises(UserError, match="names no config key"):
        load_config(None, ["tune.search_space.model.dropuot={uniform: [0, 1]}"])
    with pytest.raises(UserError, match="low < high"):
        load_config(None, ["tune.search_space.model.dropout={uniform: [0.5, 0.1]}"])
    with pytest.raises(UserError, match="kind"):
        load_config(None, ["tune.search_space.model.dropout={gaussian: [0, 1]}"])


def test_tuning_runs_every_trial_to_completion_or_asha_retrains_the_best_and_restores(smoke_config):
    from alsoview.recommend import Recommender
    from alsoview.tune import tune

    # trials run 3 epochs, the final model train.epochs=4: the best settings are trained again
    config = dataclasses.replace(
        smoke_config, train=dataclasses.replace(smoke_config.train, num_workers=1, epochs=4, valid_users=300)
    )
    config = dataclasses.replace(
        config,
        tune=dataclasses.replace(config.tune, name="tune-test", num_samples=2, max_epochs=3, final_eval_users=200),
    )
    result = tune(config, stage_seconds={"prepare": 1.0})
    trials = pd.read_csv(result.run_dir / "trials.csv")
    assert len(trials) == 2
    assert set(trials["status"]) <= {"completed", "stopped early"}
    assert trials["training_iteration"].between(1, 3).all()
    best = json.loads((result.run_dir / "best.json").read_text())
    space = flatten_search_space(config.tune.search_space)
    assert set(best["params"]) == set(space)
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        value = best["params"][key]
        assert value in args if kind == "choice" else args[0] <= value <= args[1], key
    assert best["value"] == pytest.approx(trials[config.tune.metric].max(), abs=0.05)
    assert (result.run_dir / "balance.png").stat().st_size > 10_000

    final = result.final
    assert final is not None and not final.reused_trial
    assert final.best_dir == result.run_dir / "best"
    history = pd.read_csv(final.best_dir / "history.csv")
    assert len(history) == 4  # train.epochs, not the trials' tune.max_epochs
    saved = load_config(final.best_dir / "config.yaml")
    for key, value in best["params"].items():  # the final run trained the best trial's settings
        section, name = key.split(".")
        assert getattr(getattr(saved, section), name) == pytest.approx(value), key
    report = (result.run_dir / "report.md").read_text()
    assert "| model |" in report and "| cooccurrence |" in report and "| bpr |" in report
    assert "test/full/ndcg@10: model" in report
    assert "| final training |" in report and "| prepare |" in report
    assert (result.run_dir / "learning_curves.png").stat().st_size > 10_000
    some_user = Recommender.from_run(final.best_dir).catalog.user_reviewer_id[1]
    top = Recommender.from_run(final.best_dir).recommend([some_user], 5)
    assert len(top) == 5 and (top["source"] == "model").all()

    # the same name: Tune restores the finished experiment, no new trials (the final stage off)
    config = dataclasses.replace(config, tune=dataclasses.replace(config.tune, final=False))
    again = tune(config)
    assert again.final is None
    assert sorted(again.trials["trial_id"]) == sorted(trials["trial_id"])


def test_an_experiment_others_could_have_written_is_not_resumed(tmp_path):
    from alsoview.tune import check_experiment_is_ours

    (tmp_path / "tuner.pkl").write_bytes(b"state")
    check_experiment_is_ours(tmp_path)  # ours: fine
    (tmp_path / "tuner.pkl").chmod(0o666)
    with pytest.raises(UserError, match=r"tuner.pkl is writable by every user: refusing to resume"):
        check_experiment_is_ours(tmp_path)
