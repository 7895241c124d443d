"""Every user-facing failure of the CLI ends in one line with its exit code: 2 for a mistake the
user can fix, 1 for a run that failed (details in the run directory), 130 for an interrupt."""

from __future__ import annotations

import pytest

from alsoview.cli import main
from alsoview.errors import RunFailedError


@pytest.fixture
def broken_run(tmp_path):
    """A run directory whose model.pt is not a model (a crafted or truncated file)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"PK\x03\x04 not really a zip archive")
    return run


def one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "train.run_name=.."], "train.run_name must be a plain name"),
        (["train", "train.run_name=/etc"], "train.run_name must be a plain name"),
        (["tune", "tune.name=../up"], "tune.name must be a plain name"),
        (["train", "sampling.cpus_per_task=.inf"], "sampling.cpus_per_task must be > 0 and <= 1024"),
        (["train", "train.cpus_per_worker=1e9"], "train.cpus_per_worker must be > 0 and <= 1024"),
        (["compare", "--name", "..", "--fractions", "0.5"], "--name must be a plain name"),
        # absurd numbers: every float finite, every size under a ceiling that says why
        (["train", "train.learning_rate=.inf"], "train.learning_rate must be a finite number"),
        (["train", "train.learning_rate=1e308"], "train.learning_rate must be <= 10 (Adam moves"),
        (["train", "train.softmax_temperature=.inf"], "train.softmax_temperature must be a finite number"),
        (["train", "sampling.popularity_exponent=.inf"], "sampling.popularity_exponent must be a finite number"),
        (["train", "text.dim=100000000"], "text.dim must be <= 4,096 (each item stores"),
        (["train", "train.epochs=1000000000"], "train.epochs must be <= 100,000"),
        (["train", "train.valid_users=1000000000000"], "train.valid_users must be <= 100,000,000"),
        (["train", "model.heads.cooccurrence.recency=.nan"], "model.heads.cooccurrence.recency must be"),
        (["train", "seed=-1"], "seed must be in [0, 4,294,967,296)"),
        (["train", "model.heads.mlp.hidden_dims=[128, 100000000]"], "hidden_dims must be a non-empty list of sizes"),
        (["train", "model.user.sequence.length=1000000"], "model.user.sequence.length must be in [1, 10000]"),
        (["train", "x=&a [*a]"], "nests deeper than 32 levels"),
    ],
)
def test_config_mistakes_are_one_line_before_any_work(capsys, argv, message):
    assert message in one_line_error(capsys, argv)


def test_a_corrupt_model_is_one_line(capsys, broken_run):
    err = one_line_error(capsys, ["recommend", "--run", str(broken_run), "--user", "A1"])
    assert f"{broken_run / 'model.pt'}: not a readable alsoview run file" in err
    err = one_line_error(capsys, ["recommend", "--run", str(broken_run), "--users-file", __file__])
    assert "not a readable alsoview run file" in err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "holds no reviewer ids"),
        (b"\n  \n", "holds no reviewer ids"),
        (b"A1\n\xff\xfe\x00binary\n", ":2: not UTF-8 text"),
        (b"A1\x00\x01\x02\n", ":1: holds control characters"),
    ],
)
def test_a_bad_users_file_is_one_line(capsys, tmp_path, broken_run, content, message):
    users = tmp_path / "users.txt"
    users.write_bytes(content)
    assert message in one_line_error(capsys, ["recommend", "--run", str(broken_run), "--users-file", str(users)])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-k", "0"], "-k must be >= 1"),
        (["-k", "zero"], "argument -k: invalid int value"),
        (["--actors", "0"], "--actors must be >= 1"),
        (["--out", "{tmp}"], "is a directory: give a file name"),
        (["--out", "{tmp}/users.txt/out.parquet"], "is a file, not a directory"),
        (["--out", "/proc/alsoview/out.parquet"], "/proc is not writable"),
    ],
)
def test_bad_batch_arguments_are_one_line_before_any_work(capsys, tmp_path, broken_run, extra, message):
    users = tmp_path / "users.txt"
    users.write_text("A1\nA2\n")
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    argv = ["recommend", "--run", str(broken_run), "--users-file", str(users), *extra]
    assert message in one_line_error(capsys, argv)


def test_a_failed_run_is_one_line_with_exit_code_1(capsys, monkeypatch):
    from alsoview import cli

    def fails(args):
        raise RunFailedError("training failed, no restart allowed (train.max_failures=0): ActorDiedError: ...")

    monkeypatch.setitem(cli.COMMANDS, "train", fails)
    assert "alsoview: failed: training failed" in one_line_error(capsys, ["train"], code=1)


def test_a_lost_worker_is_reported_with_its_cause_the_traceback_file_and_how_to_resume(tmp_path):
    from ray.exceptions import ActorDiedError
    from ray.train import WorkerGroupError

    from alsoview.config import load_config
    from alsoview.distributed.train import _failure
    from alsoview.training.checkpoint import LoopState, save_checkpoint

    (tmp_path / "checkpoint_2026-01-01_00-00-03.000000").mkdir()
    save_checkpoint(
        tmp_path / "checkpoint_2026-01-01_00-00-03.000000", {}, {}, LoopState(epoch=3), load_config(None), {}
    )
    lost = WorkerGroupError("worker 1 died", {1: ActorDiedError()})
    error = _failure(lost, tmp_path, max_failures=0)
    assert isinstance(error, RunFailedError) and len(str(error).splitlines()) == 1
    assert "no restart allowed (train.max_failures=0): ActorDiedError" in str(error)
    assert f"traceback in {tmp_path / 'error.log'}" in str(error)
    assert "resume from the checkpoint of epoch 3 (checkpoint_2026-01-01_00-00-03.000000)" in str(error)
    assert "WorkerGroupError" in (tmp_path / "error.log").read_text()


def test_generate_refuses_a_folder_it_did_not_make_and_an_unwritable_place(capsys, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    err = one_line_error(capsys, ["generate", "--out", str(notes), "--users", "10", "--items", "20"])
    assert "is not empty and holds no generated dataset" in err and (notes / "todo.txt").read_text() == "mine"
    assert "/proc is not writable" in one_line_error(capsys, ["generate", "--out", "/proc/alsoview", "--users", "10"])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"train:\n  epochs: 3\n  run_name: caf\xe9\n", "not UTF-8 text (byte 34 is 0xe9)"),
        (b"a: &a [*a]\n", "nests deeper than 32 levels (a YAML alias inside itself?)"),
        # "billion laughs": nine levels of ten aliases each expand to a billion values
        (
            b"a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
            + b"".join(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]\n".encode() for n in range(1, 10)),
            "holds more than 100,000 values once its YAML aliases are expanded",
        ),
    ],
)
def test_a_hostile_config_file_is_one_line(capsys, tmp_path, content, message):
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    err = one_line_error(capsys, ["train", "--config", str(path)])
    assert str(path) in err and message in err


def test_an_unforeseen_error_is_one_line_naming_the_file_with_its_traceback(capsys, monkeypatch, tmp_path):
    from alsoview import cli

    def breaks(args):
        return {}["a key no command has"]

    monkeypatch.setitem(cli.COMMANDS, "train", breaks)
    monkeypatch.setenv("ALSOVIEW_ERROR_DIR", str(tmp_path / "errors"))
    err = one_line_error(capsys, ["train", "train.epochs=2"], code=1)
    assert err.startswith("alsoview: internal error: KeyError: 'a key no command has' (the traceback is in ")
    (report,) = (tmp_path / "errors").iterdir()
    assert str(report) in err
    text = report.read_text()
    assert "command: alsoview train train.epochs=2" in text and "in breaks" in text and "KeyError" in text
