"""Training: the pure pieces of the epoch pipeline, and one real Ray Train run that must learn and resume."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from alsoview.config import load_config
from alsoview.data.catalog import load_catalog
from alsoview.distributed.feed import mix_blocks
from alsoview.distributed.resources import check_sample_memory, plan_resources, sharing_cores_warning
from alsoview.distributed.worker import epoch_line
from alsoview.errors import UserError
from alsoview.evaluation.validation import validation_set
from alsoview.sampling.blocks import RunPlan, block_sizes, mix_block, preview_mix, worker_blocks
from alsoview.training.batches import BatchPlan, fixed_size_batches, mix_spec
from alsoview.training.checkpoint import LoopState
from alsoview.training.trainer import EpochInputs, Trainer


def test_blocks_are_dealt_to_workers_without_loss_or_overlap():
    sizes = block_sizes(5000, 512)
    assert sizes.tolist() == [512] * 9 + [392]
    for world in (1, 2, 3, 4):
        dealt = np.concatenate([worker_blocks(len(sizes), 7, 3, rank, world) for rank in range(world)])
        assert sorted(dealt.tolist()) == list(range(len(sizes)))
    assert not np.array_equal(worker_blocks(10, 7, 0, 0, 2), worker_blocks(10, 7, 1, 0, 2))  # re-dealt per epoch


def test_steps_per_epoch_never_exceed_any_workers_batches():
    sizes = block_sizes(5000, 512)
    for world in (1, 2, 3):
        plan = BatchPlan(sizes, seed=0, world=world, rows_per_batch=100, samples_per_positive=5)
        steps = plan.steps(2)
        rows = [sizes[worker_blocks(len(sizes), 0, 2, rank, world)].sum() * 5 for rank in range(world)]
        assert all(steps <= -(-r // 100) for r in rows)
        assert steps == -(-min(rows) // 100)  # the smallest share decides


def test_a_run_plan_gives_each_epoch_its_workers_blocks_in_order():
    sizes = block_sizes(5000, 512)
    for world, per_task in ((1, 3), (3, 2), (2, 16)):
        for rank in range(world):
            plan = RunPlan(len(sizes), rank, world, seed=7, first_epoch=2, epochs=5, blocks_per_task=per_task)
            tasks = [plan.task(index) for index in range(plan.n_tasks)]
            assert [epoch for epoch, _ in tasks] == sorted(epoch for epoch, _ in tasks)
            for epoch in range(2, 5):
                blocks = np.concatenate([b for e, b in tasks if e == epoch])
                assert np.array_equal(blocks, worker_blocks(len(sizes), 7, epoch, rank, world))
                assert plan.epoch_rows(sizes, 5, epoch) == sizes[blocks].sum() * 5
            assert {epoch for epoch, _ in tasks} == {2, 3, 4}


@pytest.fixture()
def prepared(smoke_config):
    return smoke_config


def test_an_epochs_samples_do_not_depend_on_the_number_of_workers_or_blocks_per_task(prepared):
    catalog = load_catalog(prepared.data.prepared_dir)
    sampling = prepared.sampling
    config = load_config(
        None,
        [f"data.prepared_dir={prepared.data.prepared_dir}", "seed=5", f"sampling.block_rows={sampling.block_rows}"],
    )
    spec = mix_spec(config)
    n_blocks = len(block_sizes(len(catalog.train), sampling.block_rows))

    def epoch_samples(world, per_task):
        frames = []
        for rank in range(world):
            blocks = worker_blocks(n_blocks, 5, 2, rank, world)
            for start in range(0, len(blocks), per_task):
                batch = {"block": blocks[start : start + per_task]}
                frames.append(pd.DataFrame(mix_blocks(batch, [catalog], spec, epoch=2)))
        return pd.concat(frames).sort_values(["user", "item", "label", "is_hard"]).reset_index(drop=True)

    one = epoch_samples(1, 1)
    pd.testing.assert_frame_equal(one, epoch_samples(3, 1))
    pd.testing.assert_frame_equal(one, epoch_samples(2, 3))
    assert len(one) == len(catalog.train) * (1 + sampling.negatives_per_positive)
    other_epoch = pd.DataFrame(mix_block(0, catalog, spec, epoch=3))
    assert not other_epoch.equals(pd.DataFrame(mix_block(0, catalog, spec, epoch=2)))


def test_the_mix_preview_draws_what_epoch_0_draws_and_says_why_the_share_falls_short(prepared):
    catalog = load_catalog(prepared.data.prepared_dir)
    config = load_config(None, [f"data.prepared_dir={prepared.data.prepared_dir}", "sampling.block_rows=512"])
    stats = preview_mix(catalog, mix_spec(config), max_blocks=3)
    drawn = [mix_block(b, catalog, mix_spec(config), epoch=0) for b in range(3)]
    assert stats.hard_drawn == sum(int(d["is_hard"].sum()) for d in drawn)
    assert stats.negatives == sum(int((d["label"] == 0).sum()) for d in drawn)
    line = stats.describe(config.sampling.also_view_fraction)
    asked = config.sampling.also_view_fraction
    assert line.startswith(f"also-view share {asked:.2f} asked, {stats.hard_share:.2f} drawn")
    assert ("from random items" in line) == (stats.hard_shortfall > 0.005 * stats.hard_requested)
    assert stats.describe(0.0) == "also-view share 0.00"


def test_the_mix_line_says_what_the_related_filter_left_out(prepared):
    """The preview with `sampling.exclude_related` counts the left-out candidates and says so,
    also where no also-view share is asked."""
    catalog = load_catalog(prepared.data.prepared_dir)
    overrides = [f"data.prepared_dir={prepared.data.prepared_dir}", "sampling.block_rows=512"]
    config = load_config(None, [*overrides, "sampling.exclude_related=true"])
    stats = preview_mix(catalog, mix_spec(config), max_blocks=2)
    plain = preview_mix(catalog, mix_spec(load_config(None, overrides)), 2)
    assert stats.related_left_out > 0 and plain.related_left_out == 0
    line = stats.describe(config.sampling.also_view_fraction)
    assert f"{stats.related_left_out:,} drawn candidates left out as also-view neighbours" in line
    assert f"{stats.related_kept:,} negatives kept although related" in line
    assert stats.describe(0.0).startswith("also-view share 0.00; ")


def test_the_also_view_share_warms_up_linearly_then_holds():
    config = load_config(None, ["sampling.also_view_fraction=0.6", "sampling.also_view_warmup_epochs=3"])
    assert [mix_spec(config).fraction(e) for e in range(5)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.6])
    assert mix_spec(load_config(None, ["sampling.also_view_fraction=0.6"])).fraction(0) == 0.6


def _scripted_run(values: list[float], overrides: list[str]) -> LoopState:
    """Trainer.fit with no training steps and validation values in the order given."""
    from factories import tiny_catalog

    config = load_config(None, [f"train.epochs={len(values)}", *overrides])
    model = torch.nn.Linear(1, 1)
    trainer = Trainer(config, tiny_catalog(), model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    scripted = iter(values)
    metric = config.train.early_stopping_metric
    return trainer.fit(lambda epoch: EpochInputs(iter([]), steps=0), lambda: {metric: next(scripted)}, lambda m: None)


@pytest.mark.parametrize(
    ("stop_at", "epochs_run", "best"),
    [("0.3", 3, 2), ("0.2", 2, 1), ("0.25", 3, 2), ("0.9", 6, 4), ("null", 6, 4)],
)
def test_train_stop_at_ends_the_run_at_the_first_epoch_that_reaches_it(stop_at, epochs_run, best):
    state = _scripted_run([0.1, 0.2, 0.3, 0.1, 0.5, 0.4], ["train.patience=0", f"train.stop_at={stop_at}"])
    assert len(state.history) == epochs_run
    assert state.best_epoch == best
    reached = [row["reached_stop_at"] for row in state.history]
    assert reached == [False] * (epochs_run - 1) + [stop_at != "null" and epochs_run < 6]
    assert state.history[-1]["early_stopped"] == (epochs_run < 6)


def test_the_epoch_line_says_why_a_run_stops():
    line = {"epoch": 3, "train/loss": 0.5, "valid/auc": 0.7, "valid/hard_auc": 0.6}
    line.update({"train/hard_negative_share": 0.0, "train/epoch_seconds": 1.0})
    assert "stopping" not in epoch_line({**line, "early_stopped": False, "reached_stop_at": False}, "r")
    assert "train.stop_at" in epoch_line({**line, "early_stopped": True, "reached_stop_at": True}, "r")
    assert "train.patience" in epoch_line({**line, "early_stopped": True, "reached_stop_at": False}, "r")


def test_a_validation_metric_that_is_not_a_number_stops_the_run_in_one_line():
    with pytest.raises(UserError, match=r"epoch 1's valid/full/ndcg@10 is nan: the model's scores are not finite"):
        _scripted_run([0.1, float("nan"), 0.3], ["train.patience=0"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_loss_that_is_not_finite_stops_training_before_the_step(bad):
    """The weights stay those of the last finite step; the line says what to change."""
    from alsoview.training.trainer import take_steps

    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    factors = iter([1.0, bad])  # step 1 moves every weight by -0.1; step 2 would make them `bad`
    batches = iter([{"label": torch.ones(4)}] * 3)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(UserError, match=rf"training diverged: the loss was -?{bad} at step 2 of the epoch; lower"):
        take_steps(model, optimizer, batches, 3, lambda m, b: next(factors) * (m.weight.sum() + m.bias.sum()))
    assert all(torch.allclose(p, b - 0.1) for b, p in zip(before, model.parameters()))


def test_train_stop_at_must_be_a_finite_number():
    with pytest.raises(UserError, match="train.stop_at"):
        load_config(None, ["train.stop_at=.inf"])


def _replayable_run(epochs: int, start: tuple | None = None) -> tuple:
    """Train the design model (dropout 0.5) on seeded random batches, from `start` (weights,
    optimiser state, loop state) as a restarted worker would; its end state."""
    import copy
    from types import SimpleNamespace

    from factories import N_ITEMS, N_USERS, tiny_catalog

    from alsoview.model import build_model

    overrides = ["seed=7", f"train.epochs={epochs}", "train.early_stopping_metric=valid/auc", "train.patience=0"]
    config = load_config(None, overrides)
    # a restart builds a model of the same dataset (other initial weights), then loads the checkpoint
    catalog = tiny_catalog()
    trainer = Trainer(config, catalog, model=build_model(catalog, config.model, seed=1 if start else 0))
    if start is not None:
        trainer.resume(SimpleNamespace(model=start[0], optimizer=start[1], state=copy.deepcopy(start[2])))

    def epoch_inputs(epoch: int) -> EpochInputs:
        rng = np.random.default_rng([7, epoch])  # the samples of an epoch depend on the epoch only
        batches = (
            {
                "user": torch.tensor(rng.integers(1, N_USERS, 16)),
                "item": torch.tensor(rng.integers(1, N_ITEMS, 16)),
                "label": torch.tensor(rng.integers(0, 2, 16), dtype=torch.float32),
            }
            for _ in range(4)
        )
        return EpochInputs(batches, steps=4)

    state = trainer.fit(epoch_inputs, lambda: {"valid/auc": 0.5}, lambda m: None)
    return copy.deepcopy(trainer.model.state_dict()), copy.deepcopy(trainer.optimizer.state_dict()), state


def test_an_epoch_replayed_from_a_checkpoint_ends_with_the_weights_of_a_run_never_interrupted():
    """A worker restarted after a lost node replays the epochs after its checkpoint: each epoch
    seeds torch from (seed, epoch, rank), so dropout draws the same masks the second time."""
    whole, _, _ = _replayable_run(3)
    restarted, _, state = _replayable_run(3, start=_replayable_run(1))
    assert [row["epoch"] for row in state.history] == [0, 1, 2]
    assert whole.keys() == restarted.keys()
    for name, weights in whole.items():
        assert torch.equal(weights, restarted[name]), name


def test_fixed_size_batches_cut_a_block_stream_like_rays_batching():
    blocks = [{"x": torch.arange(start, stop)} for start, stop in ((0, 5), (5, 6), (6, 17), (17, 20))]
    batches = [b["x"].tolist() for b in fixed_size_batches(iter(blocks), 4)]
    assert batches == [list(range(s, min(s + 4, 20))) for s in range(0, 20, 4)]
    assert [b["x"].tolist() for b in fixed_size_batches(iter(blocks[:1]), 8)] == [[0, 1, 2, 3, 4]]
    assert list(fixed_size_batches(iter([]), 4)) == []


def test_validation_pairs_are_real_negatives(prepared):
    catalog = load_catalog(prepared.data.prepared_dir)
    pairs = validation_set(catalog, seed=0, valid_users=100)
    tables = catalog.sampling
    assert len(pairs.users) == len(catalog.valid) > 0
    assert not tables.interacted(pairs.users, pairs.random_negatives).any()
    assert not tables.interacted(pairs.hard_users, pairs.hard_negatives).any()
    assert 0.5 * len(pairs.users) < len(pairs.hard_users) <= len(pairs.users)
    for _user, positive, negative in zip(pairs.hard_users[:50], pairs.hard_positives[:50], pairs.hard_negatives[:50]):
        row = tables.also_view_indices[tables.also_view_indptr[positive] : tables.also_view_indptr[positive + 1]]
        assert negative in row


def test_workers_that_share_cores_are_warned_about_with_the_reason():
    two_on_two = load_config(None, ["train.num_workers=2"])
    warning = sharing_cores_warning(two_on_two, plan_resources(two_on_two, {"CPU": 2.0}, "train"))
    assert warning and "0.5 CPUs per worker" in warning and "no speed-up over 1 worker" in warning
    assert sharing_cores_warning(two_on_two, plan_resources(two_on_two, {"CPU": 8.0}, "train")) is None
    assert sharing_cores_warning(two_on_two, plan_resources(two_on_two, {"CPU": 2.0, "GPU": 2.0}, "train")) is None
    one = load_config(None, [])
    assert sharing_cores_warning(one, plan_resources(one, {"CPU": 1.0}, "train")) is None


def test_negatives_that_cannot_fit_in_memory_are_refused_up_front():
    cluster = {"CPU": 2.0, "memory": 16 * 2**30, "object_store_memory": 7 * 2**30}
    plan = plan_resources(load_config(None, []), cluster, "train")
    check_sample_memory(load_config(None, []), 100_000, cluster, plan)  # the defaults fit
    with pytest.raises(UserError, match=r"one mixing task .* lower sampling.blocks_per_task"):
        check_sample_memory(load_config(None, ["sampling.negatives_per_positive=100000"]), 2048, cluster, plan)
    with pytest.raises(UserError, match=r"samples an epoch"):
        many = load_config(None, ["sampling.negatives_per_positive=2000", "sampling.blocks_per_task=1"])
        check_sample_memory(many, 1_000_000, cluster, plan)


def test_training_learns(trained_run):
    """Two workers on the smoke dataset: validation AUC must clearly beat chance."""
    _, result = trained_run
    m = result.metrics
    history = pd.read_csv(result.run_dir / "history.csv")
    # 800 validation pairs: an untrained model gets 0.5 +- 0.018, so 0.6 is far outside chance
    assert history["valid/auc"].max() >= 0.6, m
    # early stopping follows the ranking metric; chance is about 0.024 (10 of ~190 unseen items)
    assert m["best/valid/full/ndcg@10"] == history["valid/full/ndcg@10"].max() >= 0.06, m
    assert history["valid/full/ndcg@10"].idxmax() == m["best/epoch"]
    assert m["epochs_total"] == 12 and m["resumed_from_epoch"] == -1
    assert 0.3 < m["train/hard_negative_share"] <= 0.5  # requested 0.5; short also-view lists fall back to random
    for name in ("config.yaml", "metrics.json", "history.csv", "model.pt"):
        assert (result.run_dir / name).is_file(), name
    assert (result.run_dir / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    assert list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))  # tensorboardX is a dependency
    assert history["epoch"].tolist() == list(range(12))
    # the workers exchanged the rows their batches touched, not every gradient (gradient_sync.py)
    sent, all_reduce = history["train/gradient_bytes_per_step"], history["train/all_reduce_bytes_per_step"]
    assert (sent > 0).all() and (sent < all_reduce).all()


def test_a_second_run_with_the_same_name_resumes(trained_run):
    import dataclasses

    from alsoview.distributed.train import train
    from alsoview.training.checkpoint import CHECKPOINT_FILE, checkpoint_dirs

    config, first = trained_run
    kept = checkpoint_dirs(first.run_dir)
    assert len(kept) == config.train.num_to_keep == 2
    newest = kept[-1] / CHECKPOINT_FILE
    newest.write_bytes(newest.read_bytes()[:1000])  # the last write was cut off (full disk, killed node)
    stale = first.run_dir / "checkpoint_2000-01-01_00-00-00.000000"  # left by an attempt that failed
    shutil.copytree(kept[0], stale)
    again = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=13))
    second = train(again)
    assert second.run_dir == first.run_dir
    assert second.metrics["resumed_from_epoch"] == 10  # the newest checkpoint that loads
    assert second.metrics["epochs_total"] == 13
    assert pd.read_csv(second.run_dir / "history.csv")["epoch"].tolist() == list(range(13))
    assert not stale.exists() and len(checkpoint_dirs(first.run_dir)) == 2


def test_a_run_that_stops_after_some_epochs_leaves_the_curves_of_its_last_checkpoint(tmp_path, caplog):
    from alsoview.distributed.train import curves_so_far
    from alsoview.training.checkpoint import save_checkpoint

    config = load_config(None, [])
    curves_so_far(tmp_path, config)  # no checkpoint yet: nothing to draw, no error
    assert not (tmp_path / "learning_curves.png").exists()
    metric = config.train.early_stopping_metric
    history = [{"epoch": e, "train/loss": 0.7 - 0.1 * e, metric: 0.05 * e, "best/epoch": e} for e in range(3)]
    folder = tmp_path / "checkpoint_2026-01-01_00-00-01"
    folder.mkdir()
    save_checkpoint(folder, {"w": torch.ones(2)}, {}, LoopState(epoch=2, history=history), config, {"a": 1})
    with caplog.at_level("INFO", logger="alsoview"):
        curves_so_far(tmp_path, config)
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert f"learning curves: {tmp_path / 'learning_curves.png'}" in caplog.text


def test_the_newest_checkpoint_that_loads_is_found_on_disk_and_old_ones_pruned(tmp_path, caplog):
    from alsoview.training.checkpoint import (
        CHECKPOINT_FILE,
        LoopState,
        checkpoint_dirs,
        latest_checkpoint,
        prune_checkpoints,
        save_checkpoint,
    )

    assert latest_checkpoint(str(tmp_path / "none")) is None
    config = load_config(None, [])
    for second in range(1, 5):
        folder = tmp_path / f"checkpoint_2026-01-01_00-00-0{second}"
        folder.mkdir()
        save_checkpoint(folder, {"w": torch.ones(2)}, {}, LoopState(epoch=second), config, {"a": 1})
    (tmp_path / "checkpoint_2026-01-01_00-00-05").mkdir()  # cut off before its file was written
    newest = tmp_path / "checkpoint_2026-01-01_00-00-04" / CHECKPOINT_FILE
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a full disk
    folder, saved = latest_checkpoint(str(tmp_path))
    assert folder.name.endswith("00-03") and saved.state.epoch == 3
    assert str(newest) in caplog.text
    assert [p.name[-2:] for p in prune_checkpoints(tmp_path, keep=2)] == ["01", "02"]
    assert [p.name[-2:] for p in checkpoint_dirs(tmp_path)] == ["03", "04"]
