"""Tuning: trial planning, the search space, and one real Tune run with Optuna and ASHA."""

from __future__ import annotations

import os

import pytest

from alsoview.config import flatten_search_space, load_config
from alsoview.distributed.tune import fit_search, param_space
from alsoview.errors import UserError


def test_search_space_from_config():
    config = load_config(
        None,
        [
            "tune.search_space.model.heads.mlp.dropout=null",
            "tune.search_space.sampling.also_view_fraction={uniform: [0.1, 0.9]}",
        ],
    )
    flat = flatten_search_space(config.tune.search_space)
    assert "model.heads.mlp.dropout" not in flat and flat["sampling.also_view_fraction"] == {"uniform": [0.1, 0.9]}
    assert "train.learning_rate" in flat  # the rest of the default space is kept
    space = param_space(config)
    assert space["sampling.also_view_fraction"].lower == 0.1
    with pytest.raises(UserError, match="names no config key"):
        load_config(None, ["tune.search_space.model.heads.mlp.dropuot={uniform: [0, 1]}"])
    with pytest.raises(UserError, match="names no config key; it is model.heads.mlp.dropout now"):
        load_config(None, ["tune.search_space.model.dropout={uniform: [0, 1]}"])
    with pytest.raises(UserError, match="low < high"):
        load_config(None, ["tune.search_space.model.heads.mlp.dropout={uniform: [0.5, 0.1]}"])
    with pytest.raises(UserError, match="kind"):
        load_config(None, ["tune.search_space.model.heads.mlp.dropout={gaussian: [0, 1]}"])
    with pytest.raises(UserError, match=r"model\.heads\.dot must be a choice of true and false"):
        load_config(None, ["tune.search_space.model.heads.dot={uniform: [0, 1]}"])
    with pytest.raises(UserError, match="train.num_workers cannot be searched: the search's resource plan"):
        load_config(None, ["tune.search_space.train.num_workers={choice: [1, 2]}"])


def test_the_search_starts_from_the_config_and_the_settings_that_won_on_real_data():
    points, notes = load_config(None, []).start_points()
    flat = flatten_search_space(load_config(None, []).tune.search_space)
    assert len(points) == 2 and notes == [] and all(set(point) == set(flat) for point in points)
    design, won = points
    assert design["model.heads.dot"] is False and design["train.learning_rate"] == 0.01  # the design as it is
    assert won["model.heads.also_view"] is True and won["model.user.history"] is True
    assert (
        won["sampling.negatives_per_positive"] == 8 and won["model.heads.mlp.dropout"] == 0.5
    )  # the rest from the config


def test_built_in_start_points_are_fitted_to_the_space_and_said_so():
    config = load_config(None, ["tune.search_space.model.user.history=null", "sampling.negatives_per_positive=8"])
    points, notes = config.start_points()
    assert "model.user.history" not in points[0] and len(points) == 2
    assert notes == ["built-in start point 2: model.user.history not searched, so left out of it"]
    narrow = load_config(None, ["tune.search_space.train.learning_rate={loguniform: [0.005, 0.03]}"])
    points, notes = narrow.start_points()
    assert len(points) == 1 and "built-in start point 2 skipped: train.learning_rate = 0.001 is outside" in notes[0]
    # the same points twice are one trial
    same = load_config(None, ["tune.start_points=[{}, {model: {heads: {mlp: {dropout: 0.5}}}}]"])
    assert len(same.start_points()[0]) == 1


def test_explicit_start_points_must_fit_the_space():
    config = load_config(
        None, ["tune.start_points=[{model: {heads: {mlp: {dropout: 0.1}}}, train: {learning_rate: 0.002}}]"]
    )
    ((point,), notes) = config.start_points()
    assert point["model.heads.mlp.dropout"] == 0.1 and point["train.learning_rate"] == 0.002 and notes == []
    with pytest.raises(
        UserError, match=r"tune.start_points\[0\] sets model.heads.mlp.hidden_dims, which tune.search_space"
    ):
        load_config(None, ["tune.start_points=[{model: {heads: {mlp: {hidden_dims: [8]}}}}]"])
    with pytest.raises(UserError, match=r"model.heads.mlp.dropout = 0.9 \(its value\) is outside its search space"):
        load_config(None, ["tune.start_points=[{model: {heads: {mlp: {dropout: 0.9}}}}]"])
    with pytest.raises(UserError, match=r"model.heads.mlp.dropout = 0.7 \(the config's value\) is outside"):
        load_config(None, ["model.heads.mlp.dropout=0.7", "tune.start_points=[{}]"])
    with pytest.raises(UserError, match="must be a mapping of sections"):
        load_config(None, ["tune.start_points=[3]"])


def test_an_experiment_others_could_have_written_is_not_resumed(tmp_path):
    from alsoview.distributed.tune import check_experiment_is_ours

    (tmp_path / "tuner.pkl").write_bytes(b"state")
    check_experiment_is_ours(tmp_path)  # ours: fine
    (tmp_path / "tuner.pkl").chmod(0o666)
    with pytest.raises(UserError, match=r"tuner.pkl is writable by every user: refusing to resume"):
        check_experiment_is_ours(tmp_path)


def test_a_grace_period_longer_than_a_trial_is_refused_in_one_line():
    from alsoview.distributed.tune import tune_config_of

    config = load_config("configs/video_games.yaml", ["tune.max_epochs=1"])
    with pytest.raises(UserError, match=r"tune.grace_period=4 is more than the 1 epochs a trial runs .*at most 1"):
        tune_config_of(config)
    assert tune_config_of(load_config("configs/video_games.yaml", [])).train.epochs == 20


def test_the_final_model_is_the_best_trial_as_far_as_it_goes(tmp_path):
    """The best trial's checkpoint is the final model when it stopped itself early (whatever the
    trials' epoch budget) or ran train.epochs; a trial cut short by the trials' shorter budget is
    trained on from its checkpoint; without a checkpoint the settings train afresh."""
    import torch

    from alsoview.distributed.tune_finish import final_plan
    from alsoview.training.checkpoint import LoopState, save_checkpoint

    def trial(name: str, epochs_run: int, epochs: int, early: bool = False):
        folder = tmp_path / name / "checkpoint_2026-01-01_00-00-00.000000"
        folder.mkdir(parents=True)
        history = [{"epoch": epochs_run - 1, "early_stopped": early}]
        state = LoopState(epoch=epochs_run - 1, best_epoch=epochs_run - 2, history=history)
        config = load_config(None, [f"train.epochs={epochs}"])
        save_checkpoint(folder, {"w": torch.ones(1)}, {}, state, config, {"users": 1})
        return tmp_path / name

    assert final_plan(trial("ran-all", 3, 3), 3).kind == "reuse"
    stopped = final_plan(trial("stopped-itself", 2, 2, early=True), 30)  # trials of 2 epochs, final 30
    assert stopped.kind == "reuse" and "stopped itself early: it ran 2 epochs (best epoch 0)" in stopped.why
    short = final_plan(trial("ran-its-budget", 2, 2), 30)
    assert short.kind == "continue" and short.checkpoint.parent == tmp_path / "ran-its-budget"
    assert "ran 2 epochs (best epoch 0) of train.epochs=30: the final model trains on" in short.why
    assert final_plan(tmp_path / "none", 3).kind == "retrain"


def test_a_failed_trials_reason_is_read_before_tune_syncs_it_to_storage(tmp_path):
    """Tune calls on_trial_error after writing the error to the trial's local folder and before
    its storage has it: the reason comes from the local copy."""
    import cloudpickle

    from alsoview.distributed.tune import trial_failure

    class Trial:
        pickled_error_file = str(tmp_path / "error.pkl")

        def get_pickled_error(self) -> None:
            return None  # storage: not there yet

    assert trial_failure(Trial()) == "no error recorded"
    (tmp_path / "error.pkl").write_bytes(cloudpickle.dumps(AttributeError("'Catalog' object has no attribute 'x'")))
    assert trial_failure(Trial()) == "'Catalog' object has no attribute 'x'"


def test_a_trial_function_trains_with_the_drivers_ray_train_settings(monkeypatch):
    """On a cluster a trial function runs in a Ray worker without the driver's environment: the
    driver's Ray Train settings (the 0.5 s poll) travel with the trainable and are set before
    the trial builds its trainer; a value already in the worker's environment is kept."""
    import types

    import ray.tune
    import ray.tune.integration.ray_train

    import alsoview.distributed.train
    from alsoview.distributed import runtime, tune

    monkeypatch.setenv(runtime.TRAIN_POLL_ENV, "0.5")
    monkeypatch.delenv(runtime.PREEMPTION_WATCHER_ENV, raising=False)
    shipped = runtime.ray_train_env()
    assert shipped == {runtime.TRAIN_POLL_ENV: "0.5"}

    seen = {}
    monkeypatch.delenv(runtime.TRAIN_POLL_ENV)  # the trial's worker process has none of it
    monkeypatch.setattr(ray.tune, "get_context", lambda: types.SimpleNamespace(get_trial_id=lambda: "t1"))
    monkeypatch.setattr(ray.tune.integration.ray_train, "TuneReportCallback", lambda: None)  # needs a session
    monkeypatch.setattr(alsoview.distributed.train, "fit_watched", lambda *a: seen.update(os.environ))
    tune.run_trial({}, load_config(None), None, None, "/nowhere", train_env=shipped)
    assert seen[runtime.TRAIN_POLL_ENV] == "0.5"


def test_a_trial_sets_a_parts_switch_before_its_settings():
    """Off in a trial, a part's searched settings are not used; on, it keeps the settings it had."""
    from alsoview.config import with_overrides

    base = load_config(None, ["model.heads.dot.item_features=false"])
    off = with_overrides(base, {"model.heads.cooccurrence": False, "model.heads.cooccurrence.recency": 0.5})
    assert off.model.heads.cooccurrence is None
    on = with_overrides(base, {"model.heads.cooccurrence.recency": 0.5, "model.heads.cooccurrence": True})
    assert on.model.heads.cooccurrence.recency == 0.5
    kept = with_overrides(base, {"model.heads.dot": True})
    assert kept.model.heads.dot.item_features is False  # on already: its settings stay


def test_settings_of_a_part_that_is_off_leave_the_search_with_a_note():
    config = load_config(
        None, ["model.heads.mlp=false", "model.heads.dot=true", "tune.search_space.model.heads.dot=null"]
    )
    space, notes = config.search_space()
    assert "model.heads.mlp.dropout" not in space and "model.heads.mlp.product_interaction" not in space
    assert "tune.search_space: model.heads.mlp.dropout left out: model.heads.mlp is off" in notes[0]
    searched = load_config(
        None,
        ["model.heads.mlp=false", "model.heads.dot=true", "tune.search_space.model.heads.mlp={choice: [false, true]}"],
    )
    assert "model.heads.mlp.dropout" in searched.search_space()[0]  # its switch is searched: so are its settings
    point = searched.start_points()[0][0]
    assert point["model.heads.mlp"] is False and point["model.heads.mlp.dropout"] == 0.5  # off: its default


def test_a_start_point_may_turn_a_searched_part_on_by_its_settings():
    config = load_config(
        None,
        [
            "tune.search_space.model.heads.cooccurrence={choice: [false, true]}",
            "tune.search_space.model.heads.cooccurrence.recency={choice: [1.0, 0.5]}",
            "tune.start_points=[{}, {model: {heads: {cooccurrence: {recency: 0.5}}}}]",
        ],
    )
    design, recency = config.start_points()[0]
    assert design["model.heads.cooccurrence"] is False and design["model.heads.cooccurrence.recency"] == 1.0
    assert recency["model.heads.cooccurrence"] is True and recency["model.heads.cooccurrence.recency"] == 0.5


class _Grid(list):
    """What fit_search reads of Tune's ResultGrid."""

    num_terminated = property(lambda self: sum(s == "TERMINATED" for s in self))
    num_errors = property(lambda self: sum(s == "ERROR" for s in self))


class _Tuner:
    """A Tuner whose fit sets up a SIGINT handler as Tune's does (putting back the one it found
    on the first signal), is sent `interrupts` Ctrl-Cs and returns `grid`."""

    def __init__(self, grid: list[str], interrupts: int = 0) -> None:
        self.grid, self.interrupts = _Grid(grid), interrupts

    def fit(self) -> _Grid:
        import signal

        found = signal.getsignal(signal.SIGINT)

        def tunes_handler(number, frame):
            signal.signal(signal.SIGINT, found)

        signal.signal(signal.SIGINT, tunes_handler)
        for _ in range(self.interrupts):
            signal.raise_signal(signal.SIGINT)
        return self.grid


def test_a_search_tune_returned_from_after_a_ctrl_c_is_an_interrupt_not_results():
    import signal

    before = signal.getsignal(signal.SIGINT)
    assert len(fit_search(_Tuner(["TERMINATED", "ERROR"]), 2)) == 2  # ended: a failed trial ends too
    assert signal.getsignal(signal.SIGINT) is before  # the handler in place before the search, again
    for tuner, trials in [
        (_Tuner(["TERMINATED", "TERMINATED"], interrupts=1), 2),  # Tune marks the trials it stopped ended
        (_Tuner(["TERMINATED"]), 2),  # stopped before every trial started
        (_Tuner(["TERMINATED", "RUNNING"]), 2),
    ]:
        with pytest.raises(KeyboardInterrupt, match=rf"search stopped when {len(tuner.grid)} of its 2 trials"):
            fit_search(tuner, trials)
        assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C during the fit stops at once, as Python's would
        fit_search(_Tuner(["RUNNING"], interrupts=2), 1)
