"""Typed configuration: files, overrides, and clear errors for user mistakes."""

from pathlib import Path

import pytest

from alsoview.config import load_config, save_config
from alsoview.errors import UserError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


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
