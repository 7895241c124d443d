"""Tuning: trial planning, the search space, and one real Tune run with Optuna and ASHA."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from alsoview.config import flatten_search_space, load_config
from alsoview.errors import UserError
from alsoview.tune import param_space


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
    with pytest.raises(UserError, match="train.num_workers cannot be searched: the search's resource plan"):
        load_config(None, ["tune.search_space.train.num_workers={choice: [1, 2]}"])


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


def test_a_grace_period_longer_than_a_trial_is_refused_in_one_line():
    from alsoview.tune import tune_config_of

    config = load_config("configs/video_games.yaml", ["tune.max_epochs=1"])
    with pytest.raises(UserError, match=r"tune.grace_period=4 is more than the 1 epochs a trial runs .*at most 1"):
        tune_config_of(config)
    assert tune_config_of(load_config("configs/video_games.yaml", [])).train.epochs == 20
