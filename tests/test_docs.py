"""The generated reference pages (scripts/gen_docs.py) match the schema and the results files:
a changed default, key or figure without a regenerated page fails here, naming the page."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from alsoview.config.keys import optional_part
from alsoview.config.schema import Config, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


gen_docs = _load_generator()


def schema_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, walked here independently of the generator."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, hint = f"{prefix}{f.name}", hints[f.name]
        inner = optional_part(hint) or (hint if dataclasses.is_dataclass(hint) else None)
        if optional_part(hint) is not None or inner is None:
            keys.append(key)
        if inner is not None:
            keys += schema_keys(inner, f"{key}.")
    return keys


def test_the_committed_pages_are_the_generated_ones():
    assert gen_docs.stale_pages() == [], "run python scripts/gen_docs.py and commit the pages"


def test_every_schema_key_is_in_the_configuration_page():
    page = (ROOT / gen_docs.CONFIGURATION).read_text(encoding="utf-8")
    missing = [key for key in schema_keys() if f"| `{key}` |" not in page]
    assert not missing
    assert len(schema_keys()) == len(gen_docs.config_keys())


def test_every_key_has_a_description_in_the_schema():
    bare = [doc.key for doc in gen_docs.config_keys() if not doc.description]
    assert not bare, f"give these fields a comment in the schema: {bare}"


def test_ranges_come_from_the_checks():
    docs = {doc.key: doc for doc in gen_docs.config_keys()}
    assert docs["train.epochs"].default == "`50`"
    assert docs["train.epochs"].allowed == ">= 1; <= 100,000"
    assert docs["model.heads.cooccurrence.recency"].allowed.startswith("in (0, 1]")
    assert "`softmax`" in docs["train.loss"].allowed


@dataclass
class _ChangedDefault(Config):
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=7))


def test_a_changed_default_makes_the_configuration_page_stale(monkeypatch, capsys):
    monkeypatch.setattr(gen_docs, "Config", _ChangedDefault)
    committed = (ROOT / gen_docs.CONFIGURATION).read_text(encoding="utf-8").splitlines()
    changed = [line for line in gen_docs.configuration_page().splitlines() if line not in committed]
    assert len(changed) == 1 and changed[0].startswith("| `train.epochs` | int | `7` |")
    assert gen_docs.stale_pages() == [gen_docs.CONFIGURATION]
    assert gen_docs.main(["--check"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{gen_docs.CONFIGURATION} is stale: run python scripts/gen_docs.py and commit it"]


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    """A copy of the results, the benchmarks README and the committed pages to change."""
    shutil.copytree(ROOT / gen_docs.RESULTS_DIR, tmp_path / gen_docs.RESULTS_DIR)
    shutil.copy(ROOT / gen_docs.BENCHMARKS_README, tmp_path / gen_docs.BENCHMARKS_README)
    (tmp_path / "docs").mkdir()
    for page in (gen_docs.CONFIGURATION, gen_docs.RESULTS):
        shutil.copy(ROOT / page, tmp_path / page)
    monkeypatch.setattr(gen_docs, "ROOT", tmp_path)
    return tmp_path


def test_a_changed_figure_makes_the_results_page_stale(results_root):
    assert gen_docs.stale_pages() == []
    path = results_root / gen_docs.RESULTS_DIR / "node_faults.json"
    data = json.loads(path.read_text())
    data["search"]["trials"] = 12345
    path.write_text(json.dumps(data))
    assert gen_docs.stale_pages() == [gen_docs.RESULTS]
    assert "| `search.trials` | 12,345 |" in gen_docs.results_page()


def test_results_leave_out_narrating_text(results_root):
    path = results_root / gen_docs.RESULTS_DIR / "made.json"
    path.write_text(json.dumps({"command": "python x.py --out issue 12/run", "note": "this round", "seconds": 1.5}))
    page = gen_docs.results_page()
    assert "issue 12" not in page and "this round" not in page
    assert "| `seconds` | 1.5 |" in page
