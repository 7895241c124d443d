"""Typed configuration: files, overrides, and clear errors for user mistakes."""

import dataclasses
import re
from pathlib import Path

import pytest

from alsoview.config import flatten_search_space, load_config, save_config
from alsoview.errors import UserError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
RECOMMENDED = Path(__file__).parents[1] / "configs" / "video_games.yaml"


def test_defaults_are_valid():
    config = load_config()
    assert config.text.encoder == "auto" and config.data.reviews == []


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    load_config(path)


def test_shipped_configs_exist():
    assert {p.name for p in CONFIGS} >= {"default.yaml", "smoke.yaml", "video_games.yaml"}


def test_overrides_are_typed():
    config = load_config(
        None,
        ["data.kcore=5", "data.min_rating=3", "text.encoder=hashing", "data.reviews=a.json.gz", "data.strict=true"],
    )
    assert config.data.kcore == 5 and config.data.min_rating == 3.0
    assert config.data.reviews == ["a.json.gz"] and config.data.strict is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.kcor=5", "unknown key data.kcor; did you mean data.kcore"),
        ("nosuch.key=1", "unknown key nosuch"),
        ("data.kcore=-1", "data.kcore must be >= 0"),
        ("data.kcore=many", "data.kcore must be int"),
        ("text.encoder=bert", "text.encoder must be one of"),
        ("data.min_rating=9", "data.min_rating must be in [0, 5]"),
        ("kcore", "not of the form"),
    ],
)
def test_bad_overrides_are_user_errors(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  kcore: [1\n")
    with pytest.raises(UserError, match="bad.yaml:.*not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(scalar)


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, ["data.kcore=3", "seed=7"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_runs_dir_must_be_a_filesystem_path():
    with pytest.raises(UserError, match="train.runs_dir must be a filesystem path"):
        load_config(None, ["train.runs_dir=s3://bucket/runs"])


VARIANTS = sorted((Path(__file__).parents[1] / "configs" / "variants").glob("*.yaml"))


@pytest.mark.parametrize("path", VARIANTS, ids=[p.name for p in VARIANTS])
def test_every_variant_overlay_refines_the_recommended_config(path):
    load_config([RECOMMENDED, path])


def test_the_model_section_nests_its_parts_on_by_true_or_settings_off_by_false_or_null():
    model = load_config(None, ["model.heads.dot=true", "model.user.sequence.length=5", "model.heads.mlp=null"]).model
    assert model.heads.dot.item_features is True and model.heads.mlp is None
    assert model.user.sequence.length == 5 and model.user.id is not None  # setting a key turns the part on
    assert load_config(None, ["model.heads.mlp.dropout=0.1"]).model.heads.mlp.dropout == 0.1
    assert load_config(None, ["model.heads.dot={item_features: false}"]).model.heads.dot.item_features is False
    with pytest.raises(UserError, match=r"unknown key model\.heads\.dott; did you mean model\.heads\.dot\?"):
        load_config(None, ["model.heads.dott=true"])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("model.user_history=true", "model.user.history"),
        ("model.dot_product=true", "model.heads.dot"),
        ("model.cooccurrence_recency=0.5", "model.heads.cooccurrence.recency"),
        ("model.user_sequence=20", "model.user.sequence.length"),
        ("model.dropout=0.1", "model.heads.mlp.dropout"),
    ],
)
def test_a_flat_model_key_of_an_earlier_version_stops_with_one_line_naming_its_new_key(old, new, tmp_path):
    with pytest.raises(UserError, match=rf"^config: {re.escape(old.split('=')[0])} is {re.escape(new)}\b.* now$"):
        load_config(None, [old])
    key, value = old.split("=")
    (tmp_path / "old.yaml").write_text(f"model:\n  {key.split('.')[1]}: {value}\n")
    with pytest.raises(UserError, match=rf"is {re.escape(new)}"):
        load_config(tmp_path / "old.yaml")


def test_config_files_refine_each_other_key_by_key(tmp_path):
    base, overlay = tmp_path / "base.yaml", tmp_path / "overlay.yaml"
    base.write_text(
        "model: {heads: {mlp: false, dot: true}}\ntrain: {learning_rate: 0.002, epochs: 7}\n"
        "tune: {search_space: {model: {heads.dot: null}, train: {loss: {choice: [bce, softmax]}}}}\n"
    )
    overlay.write_text(
        "model: {heads: {dot: {item_features: false}, cooccurrence: {recency: 0.5}}}\ntrain: {epochs: 3}\n"
        "tune: {search_space: {train.loss: null, sampling: {negatives_per_positive: {choice: [2, 4]}}}}\n"
    )
    config = load_config([base, overlay])
    assert config.model.heads.mlp is None and config.model.heads.dot.item_features is False
    assert config.model.heads.cooccurrence.recency == 0.5
    assert config.train.learning_rate == 0.002 and config.train.epochs == 3
    space = flatten_search_space(config.tune.search_space)
    assert "train.loss" not in space and "model.heads.dot" not in space
    assert space["sampling.negatives_per_positive"] == {"choice": [2, 4]} and "train.learning_rate" in space


def test_the_saved_form_of_a_config_reads_back_the_same():
    from alsoview.config import config_from_dict

    config = load_config([RECOMMENDED, VARIANTS[0]], ["model.user.sequence=true"])
    plain = config.to_dict()
    assert plain["model"]["user"] == {
        "id": False,
        "history": True,
        "sequence": {"length": 20, "blocks": 1, "dropout": 0.2},
    }
    assert config_from_dict(plain) == config


@pytest.mark.parametrize(
    "number, overlays",
    [
        (1, ["softmax", "recency", "forward", "recent-relations"]),
        (2, ["full-softmax-hard", "recency", "forward", "recent-relations"]),
        (4, ["full-softmax", "recency", "forward", "recent-relations"]),
    ],
)
def test_the_start_points_are_the_configurations_docs_quality_reports(number, overlays):
    """docs/quality.md reports Grocery's start points from runs of the earlier base plus overlays:
    they must stay the same configurations (everything but the tune section)."""
    from alsoview.config import with_overrides

    shipped = load_config(RECOMMENDED)
    points, _ = shipped.start_points()
    base = Path(__file__).parents[1] / "benchmarks" / "bases" / "bce-relations.yaml"
    measured = load_config([base, *(VARIANTS[0].parent / f"{name}.yaml" for name in overlays)])
    trial = with_overrides(shipped, points[number - 1])
    assert dataclasses.replace(trial, tune=measured.tune) == measured
