"""The prepare pipeline end to end on one local Ray: real files, other formats, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from alsoview.config import load_config
from alsoview.data import layout
from alsoview.distributed.prepare import prepare
from alsoview.errors import UserError

FAST_TEXT = ["text.encoder=hashing", "text.dim=32"]


def run_prepare(reviews, meta, out, *overrides):
    config = load_config(None, [*FAST_TEXT, *overrides])
    config.data.reviews = [str(p) for p in reviews]
    config.data.meta = [str(p) for p in meta]
    return prepare(config, out)


def assert_accounting(manifest):
    for role in ("reviews", "meta"):
        rows = manifest["rows"][role]
        assert rows["read"] == rows["kept"] + sum(manifest["dropped"][role].values()), role


def test_gift_cards_counts_match_the_data_readme(ray_session, realworld, tmp_path):
    folder = realworld / "Gift_Cards"
    result = run_prepare([folder / "Gift_Cards_5.json.gz"], [folder / "meta_Gift_Cards.json.gz"], tmp_path / "gift")
    m = result.manifest
    assert_accounting(m)
    assert m["rows"]["reviews"]["read"] == 2972 and m["dropped"]["reviews"] == {"duplicate_interaction": 7}
    assert (m["counts"]["users"], m["counts"]["items"], m["counts"]["interactions"]) == (458, 148, 2965)
    assert m["rows"]["meta"] == {"read": 1547, "kept": 148, "dropped": 1399}
    assert m["counts"]["items_with_also_view"] == 140  # README: 140 point at least once to another reviewed item
    assert m["counts"]["valid"] == m["counts"]["test"] == 458  # 5-core: every user has valid and test
    assert m["text_encoder"]["name"] == "hashing" and m["text_encoder"]["dim"] == 32

    items = pq.read_table(result.out_dir / "items.parquet").to_pandas()
    assert len(items) == 148 and items["item_idx"].tolist() == list(range(1, 149))
    vectors = np.stack(items["text_vector"].to_numpy())
    assert vectors.shape == (148, 32) and np.isfinite(vectors).all()
    assert all(0 < v <= 148 and v != i for i, row in zip(items["item_idx"], items["also_view"]) for v in row)
    # also_buy, counted straight from the files: the first meta line per reviewed asin, links to
    # other reviewed asins
    with gzip.open(folder / "Gift_Cards_5.json.gz", "rt") as handle:
        reviewed = {json.loads(line)["asin"] for line in handle}
    bought: dict[str, set[str]] = {}
    with gzip.open(folder / "meta_Gift_Cards.json.gz", "rt") as handle:
        for line in handle:
            record = json.loads(line)
            if record["asin"] in reviewed and record["asin"] not in bought:
                bought[record["asin"]] = (set(record.get("also_buy") or []) & reviewed) - {record["asin"]}
    assert m["counts"]["items_with_also_buy"] == sum(1 for links in bought.values() if links) > 0
    assert m["counts"]["also_buy_edges"] == sum(len(links) for links in bought.values())
    by_asin = dict(zip(items["asin"], items["item_idx"]))
    assert {a: sorted(r) for a, r in zip(items["asin"], items["also_buy"]) if len(r)} == {
        a: sorted(by_asin[b] for b in links) for a, links in bought.items() if links
    }
    interactions = pd.read_parquet(result.out_dir / "interactions.parquet")
    assert set(interactions["split"].astype(str)) == {"train", "valid", "test"}
    last = interactions.sort_values("time").groupby("user_idx").tail(1)
    assert (interactions.groupby("user_idx")["time"].max().to_numpy() >= 0).all() and len(last) == 458


def test_magazine_duplicate_meta_lines(ray_session, realworld, tmp_path):
    folder = realworld / "Magazine_Subscriptions"
    m = run_prepare(
        [folder / "Magazine_Subscriptions_5.json.gz"],
        [folder / "meta_Magazine_Subscriptions.json.gz"],
        tmp_path / "mag",
    ).manifest
    assert_accounting(m)
    assert m["rows"]["meta"]["read"] == 3385
    assert m["dropped"]["meta"]["duplicate_meta"] == 3385 - 2320  # 2,320 distinct asins
    assert m["rows"]["meta"]["kept"] == 151 and m["counts"]["items"] == 157
    assert m["stats"]["items_without_meta"] == 6
    assert m["counts"]["items_with_also_view"] == 111
    assert (m["counts"]["users"], m["dropped"]["reviews"]["duplicate_interaction"]) == (348, 73)
    examples = m["drop_examples"]["meta"]["duplicate_meta"]
    assert examples and examples[0].startswith(str(folder / "meta_Magazine_Subscriptions.json.gz") + ":")


def test_generate_then_prepare_is_deterministic_whatever_its_blocks_and_windows(ray_session, tmp_path, monkeypatch):
    from alsoview.data.synthetic import generate
    from alsoview.distributed import prepare as prepare_module

    generated = generate(tmp_path / "raw", users=150, items=60, seed=3)
    reviews, meta = tmp_path / "raw" / "reviews.json.gz", tmp_path / "raw" / "meta.json.gz"
    first = run_prepare([reviews], [meta], tmp_path / "a")
    windows, real_windows = [], prepare_module._windows

    def counted(blocks, size):
        for window in real_windows(blocks, size):
            windows.append(len(window))
            yield window

    monkeypatch.setattr(prepare_module, "PARSE_WINDOW_BLOCKS", 2)  # blocks of 100 lines, 2 a Ray Data execution
    monkeypatch.setattr(prepare_module, "_windows", counted)
    second = run_prepare([reviews], [meta], tmp_path / "b", "data.read_chunk_lines=100")
    assert len(windows) > 2 and max(windows) == 2, windows  # the same dataset from several windows
    m = first.manifest
    assert_accounting(m)
    assert m["counts"]["users"] == 150 and m["counts"]["items"] <= 60
    assert m["rows"]["reviews"]["read"] == generated.reviews
    assert m["dropped"]["meta"]["duplicate_meta"] > 0 and m["stats"]["also_view_edges_outside_catalog"] > 0
    assert m["counts"]["items_with_also_view"] > 0.5 * m["counts"]["items"]
    for name in ("interactions", "items", "users", "brands", "logged_negatives"):
        a = pq.read_table(first.out_dir / f"{name}.parquet")
        b = pq.read_table(second.out_dir / f"{name}.parquet")
        assert a.equals(b), name
    strip = lambda d: {k: v for k, v in d.items() if k not in ("timing_seconds", "config")}  # noqa: E731
    assert strip(first.manifest) == strip(second.manifest)


def test_other_formats_ratings_csv_2014_meta_and_combined(ray_session, tmp_path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text(
        "".join(f"B0{i % 4},A{u},{1 + (u + i) % 5}.0,{1400000000 + 86400 * i}\n" for u in range(5) for i in range(4))
        + "B01,A1,notanumber,1\n"
    )
    meta = tmp_path / "meta_2014.json"
    meta.write_text(
        "\n".join(
            [
                "{'asin': 'B00', 'title': 'Zero', 'price': 3.5, 'related': {'also_viewed': ['B01', 'B02', 'X']}}",
                '{"asin": "B01", "title": "One", "price": "$4.00", "also_view": ["B00"], "brand": "Acme"}',
                "{'asin': 'B02', 'title': ",  # malformed
            ]
        )
        + "\n"
    )
    m = run_prepare([ratings], [meta], tmp_path / "p").manifest
    assert_accounting(m)
    assert m["inputs"]["reviews"][0]["format"] == "ratings_csv"
    assert m["dropped"]["reviews"] == {"bad_rating": 1}
    assert m["dropped"]["meta"] == {"malformed_record": 1}
    assert m["drop_examples"]["meta"]["malformed_record"][0].startswith(f"{meta}:3: ")
    assert m["counts"]["also_view_edges"] == 3  # B00 -> B01, B02; B01 -> B00

    combined = tmp_path / "combined_samples.csv"
    combined.write_text(
        "reviewerID,asin,brand,price,description,also_view,label\n"
        + "".join(f'A{u},B0{i},Acme,$5.00,"Fun, ""quoted""\nline","[\'B01\']",1\n' for u in range(3) for i in range(3))
        + "A1,B03,Acme,,,[],0\nA2,B01,Acme,,,[],0\n"
    )
    m = run_prepare([combined], [], tmp_path / "c").manifest
    assert_accounting(m)
    assert m["inputs"]["reviews"][0] == {
        "path": str(combined),
        "sha256": hashlib.sha256(combined.read_bytes()).hexdigest(),
        "format": "combined_csv",
        "rows_read": 11,
        "header_lines": 1,
    }
    assert m["counts"]["interactions"] == 9 and m["counts"]["logged_negatives"] == 0
    assert m["dropped"]["reviews"] == {"logged_negative_is_positive": 1, "logged_negative_outside_catalog": 1}
    assert m["stats"]["items_meta_from_combined"] == 3 and m["stats"]["time_source"].startswith("file order")


def test_malformed_lines_are_counted_with_examples_and_fatal_when_strict(ray_session, tmp_path):
    good = [
        json.dumps({"overall": 5.0, "reviewerID": f"A{u}", "asin": f"B{i}", "unixReviewTime": 100 * i})
        for u in range(4)
        for i in range(3)
    ]
    lines = (
        good[:5]
        + ['{"overall": 5.0, "reviewerID": "A9"', "", '{"overall": 5.0, "asin": "B1", "unixReviewTime": 1}']
        + good[5:]
    )
    path = tmp_path / "reviews.json.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    m = run_prepare([path], [], tmp_path / "out").manifest
    assert_accounting(m)
    assert m["dropped"]["reviews"] == {"blank_line": 1, "malformed_record": 1, "missing_field": 1}
    assert m["drop_examples"]["reviews"]["malformed_record"][0].startswith(f"{path}:6: not valid JSON")
    assert m["drop_examples"]["reviews"]["missing_field"] == [f"{path}:8: no reviewerID"]
    with pytest.raises(
        UserError, match=r"--strict: 1 malformed reviews record\(s\) \(malformed_record\); first: .*:6:"
    ):
        run_prepare([path], [], tmp_path / "strict", "data.strict=true")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "reviews file not found"),
        ("empty", "reviews file is empty"),
        ("corrupt_gzip", "cannot read"),
        ("meta_as_reviews", "wrong format for reviews: looks like item metadata"),
        ("reviews_as_meta", "wrong format for meta: looks like reviews"),
        ("glob_without_match", "no file matches"),
        ("directory", "not a file"),
        ("random_bytes", r"wrong format for reviews: first line is neither JSON nor CSV \(new-line character"),
    ],
)
def test_bad_files_end_with_one_clear_error(tmp_path, case, message):
    review = json.dumps({"overall": 5.0, "reviewerID": "A", "asin": "B", "unixReviewTime": 1}) + "\n"
    meta_line = json.dumps({"asin": "B", "title": "t", "also_view": []}) + "\n"
    reviews, meta = tmp_path / "reviews.json", tmp_path / "meta.json"
    reviews.write_text(review)
    meta.write_text(meta_line)
    if case == "missing":
        reviews = tmp_path / "nope.json"
    elif case == "empty":
        reviews.write_text("\n\n")
    elif case == "corrupt_gzip":
        reviews = tmp_path / "broken.json.gz"
        reviews.write_bytes(gzip.compress(review.encode() * 50)[:40])
    elif case == "meta_as_reviews":
        reviews = meta
    elif case == "reviews_as_meta":
        meta = reviews
    elif case == "glob_without_match":
        reviews = tmp_path / "*.jsonl"
    elif case == "directory":
        reviews = tmp_path
    elif case == "random_bytes":  # noise named .gz (seed 5: its first line holds a bare carriage return)
        reviews = tmp_path / "noise.json.gz"
        reviews.write_bytes(random.Random(5).randbytes(1000).replace(b"\x1f\x8b", b"xx"))
    with pytest.raises(UserError, match=message):
        run_prepare([reviews], [meta], tmp_path / "out")


def test_cli_reports_user_errors_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alsoview.cli",
            "prepare",
            "--reviews",
            str(tmp_path / "none.json.gz"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [f"alsoview: error: reviews file not found: {tmp_path / 'none.json.gz'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "alsoview.cli", "prepare", "data.kcor=3"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "did you mean data.kcore" in proc.stderr and "Traceback" not in proc.stderr


def test_a_prepared_dataset_is_reused_by_input_contents_not_paths(tmp_path):
    """A job's inputs arrive in a fresh copy of its working directory on every submission: the
    same files elsewhere reuse the dataset; other contents or settings prepare it again."""
    from alsoview.data.inputs import file_sha256, why_stale

    first = tmp_path / "first"
    first.mkdir()
    review = {"overall": 5.0, "reviewerID": "A1", "asin": "B1", "unixReviewTime": 1}
    for name, line in (("reviews.json.gz", review), ("meta.json.gz", {"asin": "B1", "title": "Halo"})):
        with gzip.open(first / name, "wt") as handle:
            handle.write(json.dumps(line) + "\n")

    def config_at(folder, *overrides):
        config = load_config(None, [*FAST_TEXT, *overrides])
        config.data.reviews, config.data.meta = [str(folder / "reviews.json.gz")], [str(folder / "meta.json.gz")]
        return config.dataset_settings()

    prepared_with = config_at(first)
    manifest = {
        "format_version": layout.FORMAT_VERSION,
        "config": prepared_with,
        "inputs": {r: [{"path": p, "sha256": file_sha256(p)}] for r, (p,) in
                   (("reviews", prepared_with["data"]["reviews"]), ("meta", prepared_with["data"]["meta"]))},
    }  # fmt: skip
    assert why_stale(manifest, prepared_with) is None
    older = {**manifest, "format_version": 1}  # written before items.parquet had also_buy
    assert why_stale(older, prepared_with) == f"prepared-dataset format 1, this alsoview writes {layout.FORMAT_VERSION}"
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    assert why_stale(manifest, config_at(copy)) is None  # same contents, another place
    assert why_stale(manifest, config_at(copy, "data.kcore=5")) == "other settings: data.kcore"
    with gzip.open(copy / "reviews.json.gz", "wt") as handle:
        handle.write(json.dumps({**review, "overall": 4.0}) + "\n")
    assert why_stale(manifest, config_at(copy)) == f"{copy / 'reviews.json.gz'} has other contents"
    del manifest["inputs"]["meta"][0]["sha256"]
    assert why_stale(manifest, config_at(first)) == "made before input files were fingerprinted"


def test_the_generated_default_is_not_prepared_over_a_dataset_of_named_files(tmp_path):
    """No data.reviews means the generated default; pointed by data.prepared_dir at a dataset
    prepared from named files, the command refuses in one line and leaves it as it was (a
    dataset prepared from another default is prepared again, as any stale one)."""
    from alsoview.config import with_absolute_paths
    from alsoview.distributed.prepare import _refuse_default_over_named, ensure_prepared

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    named = [str(tmp_path / "raw" / "reviews.json.gz"), str(tmp_path / "raw" / "more.json.gz")]
    manifest = {"config": {"data": {"reviews": named, "generated_dir": str(tmp_path / "generated")}}}
    (prepared / layout.MANIFEST).write_text(json.dumps(manifest))
    config = load_config(None, [*FAST_TEXT, f"data.prepared_dir={prepared}", f"storage={tmp_path}"])
    with pytest.raises(UserError) as raised:
        ensure_prepared(config)
    assert str(raised.value).startswith(
        f"data.prepared_dir={prepared} holds a dataset prepared from {named[0]} and 1 more, and this command "
        "names no data.reviews, so it would prepare the generated default dataset over it"
    )
    assert json.loads((prepared / layout.MANIFEST).read_text()) == manifest
    assert not (tmp_path / "data").exists()  # refused before generating anything
    default = str(tmp_path / "generated" / "reviews.json.gz")
    manifest["config"]["data"]["reviews"] = [default]
    (prepared / layout.MANIFEST).write_text(json.dumps(manifest))
    _refuse_default_over_named(with_absolute_paths(config))  # another default: the usual rule
    config.data.reviews = named  # files named: the usual rule too
    _refuse_default_over_named(with_absolute_paths(config))


def test_the_generated_default_is_made_again_by_another_generator_or_settings(tmp_path, caplog):
    """The default folder is reused only when its generation.json records this generator version and
    the config's data.generate_* settings; otherwise it is made again and the log says what differs."""
    from alsoview.data.synthetic import GENERATION_RECORD, GENERATOR_VERSION
    from alsoview.distributed.prepare import with_default_inputs

    folder = tmp_path / "generated"
    record_path = folder / GENERATION_RECORD

    def default_inputs(*overrides):
        config = load_config(
            None, [f"data.generated_dir={folder}", "data.generate_users=200", "data.generate_items=100", *overrides]
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="alsoview"):
            config = with_default_inputs(config)
        assert config.data.reviews == [str(folder / "reviews.json.gz")]
        return json.loads(record_path.read_text()), caplog.text

    record, _ = default_inputs()
    assert record["generator_version"] == GENERATOR_VERSION
    assert record["parameters"] == {"users": 200, "items": 100, "seed": 0}
    _, log = default_inputs()
    assert "using the generated default dataset" in log

    record, log = default_inputs("data.generate_seed=1")
    assert record["parameters"]["seed"] == 1 and "seed 0, config asks 1" in log

    record.pop("generator_version")  # as the first generator wrote it
    record_path.write_text(json.dumps(record))
    record, log = default_inputs("data.generate_seed=1")
    assert record["generator_version"] == GENERATOR_VERSION
    assert f"generator version 1, now {GENERATOR_VERSION}" in log and "config asks" not in log
