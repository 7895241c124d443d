"""Shared outputs: one writer at a time, a directory published whole, nobody's folder replaced."""

from __future__ import annotations

import threading
import time

import pytest

from alsoview import storage
from alsoview.errors import UserError


def test_only_empty_new_or_own_directories_are_replaced(tmp_path):
    storage.check_replaceable(tmp_path / "new" / "deeper", "manifest.json", "prepared dataset")
    (tmp_path / "empty").mkdir()
    storage.check_replaceable(tmp_path / "empty", "manifest.json", "prepared dataset")
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "manifest.json").write_text("{}")
    storage.check_replaceable(ours, "manifest.json", "prepared dataset")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no prepared dataset"):
        storage.check_replaceable(notes, "manifest.json", "prepared dataset")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        storage.check_replaceable(tmp_path / "file", "manifest.json", "prepared dataset")
    assert (notes / "todo.txt").read_text() == "mine"


def test_publishing_replaces_whole_and_keeps_the_old_one_when_it_fails(tmp_path):
    out = tmp_path / "dataset"
    first = storage.staging_beside(out)
    (first / "v").write_text("1")
    storage.publish(first, out)
    assert (out / "v").read_text() == "1" and not first.exists()
    second = storage.staging_beside(out)
    (second / "v").write_text("2")
    storage.publish(second, out)
    assert (out / "v").read_text() == "2"
    missing = tmp_path / ".dataset.partial-gone"  # a staging folder that vanished: the rename fails
    with pytest.raises(OSError):
        storage.publish(missing, out)
    assert (out / "v").read_text() == "2"  # the previous dataset is back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_a_second_writer_waits_for_the_first(tmp_path):
    target = tmp_path / "dataset"
    order: list[str] = []
    first_has_it = threading.Event()

    def first() -> None:
        with storage.locked(target, "the dataset"):
            first_has_it.set()
            time.sleep(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    first_has_it.wait(10)
    with storage.locked(target, "the dataset"):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
