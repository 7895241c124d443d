"""Interrupts and collisions: Ctrl-C and kill -9 of `alsoview prepare`, `train` and `tune` at
points reached by watching what they print or write, two processes writing one output at once,
and a disk that fills during a checkpoint; then the same command again resumes or redoes the
work, trusts no half-written file and loses no finished epoch.

The commands run as a user's would, each in a process group of its own (a terminal's job):
`prepare` and `tune` with a private Ray instance of their own, `train` joining one Ray cluster
of the test's (one Ray start for its five commands). Ctrl-C is SIGINT to the whole group (what a
terminal sends); kill -9 is SIGKILL to the command's process alone. A point in a run is reached
by watching what it prints or writes; a paused process (SIGSTOP) holds a lock while the second
one tries it.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
from local_cluster import TRAIN_WORKER, LocalCluster

from alsoview import storage
from alsoview.config import load_config
from alsoview.errors import UserError
from alsoview.training import checkpoint as runs

ROOT = Path(__file__).resolve().parents[1]
# A bound on how long a command may go without printing the line a test waits for: it only stops
# a hung test, it asserts nothing about speed.
SILENCE_LIMIT = 600.0
# What Ray leaves running when the driver of a private instance is killed with SIGKILL: its two
# agents outlive the raylet (checked by hand with Ray 2.60). Reaped by the test that started them.
RAY_ORPHANS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


class Command:
    """One `alsoview ...` in a process group of its own; its output (stdout and stderr) read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alsoview.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.times: list[float] = []
        self._fresh: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.times.append(time.monotonic())
            self._fresh.put(self.lines[-1])
        self._fresh.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The next line printed that matches `pattern`."""
        while True:
            try:
                line = self._fresh.get(timeout=SILENCE_LIMIT)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in {SILENCE_LIMIT:.0f} s; printed:\n{self.output()}")
            if line is None:
                pytest.fail(f"ended before printing {pattern!r}; printed:\n{self.output()}")
            found = re.search(pattern, line)
            if found:
                return found

    def finish(self) -> int:
        code = self.proc.wait(timeout=SILENCE_LIMIT)
        while self._fresh.get(timeout=SILENCE_LIMIT) is not None:
            pass  # every line read
        return code

    def output(self) -> str:
        return "\n".join(self.lines)

    def last_line(self) -> str:
        return self.lines[-1] if self.lines else ""

    def ctrl_c(self) -> None:
        os.killpg(self.pid, signal.SIGINT)

    def kill_9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def go_on(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def members(self) -> list[str]:
        """The command lines of the processes still in this command's session (its Ray instance's)."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if proc.name.isdigit() and int(stat[3]) == self.pid and stat[0] != "Z":  # its session
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (OSError, IndexError, ValueError):
                continue
        return found

    def wait_until_ray_is_gone(self) -> None:
        """Until every process of the killed command's private Ray instance but Ray's orphans has ended."""
        wait_until(lambda: all(m.startswith(RAY_ORPHANS) for m in self.members()), "its Ray instance ended")

    def reap(self) -> None:
        """What this command left running (Ray's agents after a kill -9), ended."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def commands():
    """Commands a test starts; whatever of them is still running at its end is killed."""
    started: list[Command] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Command:
        started.append(Command(*args, env=env))
        return started[-1]

    yield start
    for command in started:  # pytest shows it for a test that fails
        print(f"\n----- pid {command.pid}: {' '.join(command.proc.args[3:])}")
        print("\n".join(f"{t:9.1f} {line}" for t, line in zip(command.times, command.lines)))
        command.reap()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SILENCE_LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"not in {SILENCE_LIMIT:.0f} s: {what}"
        time.sleep(0.05)


def wait_for_file(path: Path, holds: str) -> None:
    wait_until(lambda: path.is_file() and path.read_text().strip() == holds, f"{path} holds {holds!r}")


def hidden_beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# ---------------------------------------------------------------- without Ray


def test_a_lock_is_taken_once_per_thread_however_deeply_it_nests(tmp_path):
    target = tmp_path / "dataset"
    with storage.locked(target, "the dataset"), storage.locked(target, "the dataset"):
        pass  # ensure_prepared holds it, then prepare takes it again: no wait on itself
    with storage.locked(target, "the dataset"):
        assert (tmp_path / "dataset.lock").read_text().strip() == str(os.getpid())


def test_a_run_another_process_holds_is_refused_naming_it_and_is_free_once_that_process_is_killed(tmp_path):
    lock = tmp_path / "run" / runs.RUN_LOCK
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from alsoview import storage\n"
            f"with storage.held_or_refused(Path({str(lock)!r}), 'the run', 'wait'):\n"
            "    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as refused:
            with storage.held_or_refused(lock, "train.run_name=r", "choose another train.run_name"):
                pass
        assert str(refused.value) == (
            f"train.run_name=r is in use: another process (pid {holder.pid}) holds {lock}; "
            "choose another train.run_name"
        )
    finally:
        holder.kill()  # kill -9: the kernel drops its flock
        holder.wait()
    with storage.held_or_refused(lock, "train.run_name=r", "choose another train.run_name"):
        assert lock.read_text().strip() == str(os.getpid())


def test_what_a_killed_writer_left_is_cleared_and_an_output_moved_aside_is_put_back(tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    staged = tmp_path / ".dataset.partial-0badf00d"  # killed while writing: never trusted, even whole
    staged.mkdir()
    (staged / "manifest.json").write_text("{}")
    (tmp_path / ".dataset.partial-12345678").write_bytes(b"half a file")  # a replace_file temporary
    assert len(storage.clear_leftovers(out)) == 2
    assert hidden_beside(out) == [] and (out / "manifest.json").is_file()
    # Killed between publish's two renames: the old output is aside, the new one still staged.
    out.rename(tmp_path / ".dataset.old-87654321")
    (tmp_path / ".dataset.partial-abcdef12").mkdir()
    storage.clear_leftovers(out)
    assert (out / "manifest.json").read_text() == "{}" and hidden_beside(out) == []


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("the previous model")
    with pytest.raises(OSError):
        with storage.replace_file(path) as partial:
            partial.write_text("half")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "the previous model" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    with storage.replace_file(path) as partial:
        partial.write_text("the new model")
    assert path.read_text() == "the new model" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_newer_checkpoint_on_disk_wins_over_the_older_one_ray_train_restored(tmp_path):
    config = load_config(None, [])
    for epoch in range(3):
        folder = tmp_path / f"checkpoint_2026-01-01_00-00-0{epoch}"
        folder.mkdir()
        runs.save_checkpoint(folder, {"w": torch.ones(2)}, {}, runs.LoopState(epoch=epoch), config, {"a": 1})
    restored = runs.load_checkpoint(tmp_path / "checkpoint_2026-01-01_00-00-00")
    folder, saved = runs.newer_on_disk(restored, tmp_path)
    assert folder.name.endswith("0-02") and saved.state.epoch == 2
    assert runs.newer_on_disk(saved, tmp_path) is None  # Ray's is the newest: Ray's is used
    assert runs.newer_on_disk(None, tmp_path)[1].state.epoch == 2
    newest = tmp_path / "checkpoint_2026-01-01_00-00-02" / runs.CHECKPOINT_FILE
    newest.write_bytes(newest.read_bytes()[:1000])  # cut by a kill or a full disk: not trusted
    assert runs.newer_on_disk(restored, tmp_path)[1].state.epoch == 1


# ---------------------------------------------------------------- prepare


@pytest.mark.ray  # each command starts a private Ray instance, as a user's would
def test_prepare_interrupted_killed_or_run_twice_at_once_leaves_one_whole_dataset(tmp_path, commands):
    from alsoview.data.catalog import load_catalog

    out = tmp_path / "prepared"
    prepare = ("prepare", "--config", "configs/smoke.yaml", "--out", str(out))

    # Ctrl-C while the review file is parsed: one line, exit code 130, nothing written.
    first = commands(*prepare)
    first.wait_for(r"read .*reviews\.json\.gz: \d+ records")
    first.ctrl_c()
    assert first.finish() == 130, first.output()
    assert first.last_line().startswith("alsoview: interrupted"), first.output()
    assert not out.exists() and hidden_beside(out) == []

    # Two at once: the second waits its turn, naming the first; the first is then killed with
    # kill -9 while it embeds the item texts (after its parse and clean), and the second, given the
    # lock by the kernel, clears what is left and writes the whole dataset.
    holder = commands(*prepare)
    wait_for_file(out.with_name("prepared.lock"), str(holder.pid))
    holder.stop()  # it holds the lock; paused, so that the second surely finds it taken
    second = commands(*prepare)
    second.wait_for(rf"waiting for another process \(pid {holder.pid}\) that is making the prepared dataset")
    holder.go_on()
    holder.wait_for(r"cleaned: \d+ users")
    # What a writer killed in the middle of writing leaves: a staging folder, manifest and all.
    staged = out.with_name(".prepared.partial-0badf00d")
    staged.mkdir()
    (staged / "manifest.json").write_text("{}")
    holder.kill_9()
    assert holder.finish() == -signal.SIGKILL
    holder.wait_until_ray_is_gone()  # its Ray instance ends with it, but for Ray's two agents
    assert second.finish() == 0, second.output()
    assert "removed 1 leftover(s) of an interrupted writer" in second.output()
    assert hidden_beside(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["interactions"] > 0 and load_catalog(out).n_items > 0


# ---------------------------------------------------------------- train


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs to fill: a disk that runs out during a checkpoint."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounting = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)]
    done = subprocess.run(mounting, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def loadable_epochs(run_dir: Path) -> list[int]:
    """The epochs of a run's checkpoints on disk that load (the newest is where a run resumes)."""
    epochs = []
    for folder in runs.checkpoint_dirs(run_dir):
        try:
            epochs.append(runs.load_checkpoint(folder).state.epoch)
        except UserError:
            continue
    return epochs


def printed_epochs(command: Command, run: str) -> list[int]:
    return [int(m.group(1)) for line in command.lines for m in [re.search(rf"\b{run} epoch (\d+):", line)] if m]


def resumed_epoch(command: Command) -> int:
    return int(command.wait_for(r"resumed from the checkpoint of epoch (\d+)").group(1))


@pytest.fixture
def cluster(tmp_path_factory):
    """A one-node Ray cluster of 2 CPUs on 127.0.0.1 that the train commands join (`--address`):
    one Ray start for the test's five commands instead of one each."""
    import ray

    assert not ray.is_initialized(), "the interrupt tests must run before any test that starts Ray in-process"
    cluster = LocalCluster(Path(tmp_path_factory.mktemp("avint", numbered=True)), head_cpus=2)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.ray_cluster  # starts Ray processes of its own: before the suite's instance
def test_train_stopped_killed_out_of_disk_and_run_twice_at_once_resumes_and_loses_no_epoch(
    cluster, small_disk, commands
):
    run, epochs = "interrupted", 12
    run_dir = small_disk / run
    args = (
        "train", "--address", cluster.gcs, "--config", "configs/smoke.yaml", f"train.run_name={run}",
        f"train.runs_dir={small_disk}", f"train.epochs={epochs}", "train.num_workers=1", "train.max_failures=0",
    )  # fmt: skip

    def train() -> Command:
        return commands(*args, env=cluster.driver_env())

    # 1. Ctrl-C during epoch 1 (epoch 0's line is out): one line naming where it resumes, 130.
    first = train()
    first.wait_for(rf"{run} epoch 0:")
    first.ctrl_c()
    assert first.finish() == 130, first.output()
    newest = max(loadable_epochs(run_dir))
    assert first.last_line().startswith("alsoview: interrupted: training stopped; run the same command again")
    assert f"resume from the checkpoint of epoch {newest} (" in first.last_line()
    assert newest >= max(printed_epochs(first, run))  # every epoch it printed was checkpointed

    # 2. The same command resumes from that newest checkpoint (Ray Train's own record may be older);
    #    kill -9 during the epoch after the first it prints.
    second = train()
    assert resumed_epoch(second) == newest
    second.wait_for(rf"{run} epoch {newest + 1}:")
    second.kill_9()
    assert second.finish() == -signal.SIGKILL
    # Ray ends a dead driver's actors; until then its worker may still write a checkpoint.
    wait_until(lambda: not cluster.head.holds(TRAIN_WORKER), "the killed run's training worker ended")
    on_disk = loadable_epochs(run_dir)
    assert max(on_disk) >= newest + 1
    # A kill during the copy of a checkpoint leaves it cut short: the newest one is cut here.
    cut = runs.checkpoint_dirs(run_dir)[-1] / runs.CHECKPOINT_FILE
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    good = max(loadable_epochs(run_dir))

    # 3. A disk with half a checkpoint free: the run resumes from the newest checkpoint that loads,
    #    then cannot write the next one: one line, exit code 1; what it had still loads.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * (free - cut.stat().st_size))  # about half a checkpoint left
    third = train()
    assert resumed_epoch(third) == good
    code = third.finish()
    assert code == 1, third.output()
    assert re.match(r"alsoview: failed: training failed, .*No space left on device", third.last_line()), third.output()
    assert f"resume from the checkpoint of epoch {good} (" in third.last_line()
    assert max(loadable_epochs(run_dir)) == good

    # 4. Space again: the same command resumes there and ends; a second process training the same
    #    run meanwhile is refused in one line (exit code 2), naming the one that trains it.
    filler.unlink()
    fourth = train()
    wait_for_file(run_dir / runs.RUN_LOCK, str(fourth.pid))
    fourth.stop()  # it holds the run; paused, so that the second surely finds it taken
    again = train()
    assert again.finish() == 2, again.output()
    assert again.last_line() == (
        f"alsoview: error: train.run_name={run} is in use: another process (pid {fourth.pid}) holds "
        f"{run_dir / runs.RUN_LOCK}; wait for that run to end (the same command then resumes it), "
        "or choose another train.run_name"
    )
    fourth.go_on()
    assert resumed_epoch(fourth) == good
    assert fourth.finish() == 0, fourth.output()
    with open(run_dir / runs.HISTORY_FILE, newline="") as history:
        assert [int(float(row["epoch"])) for row in csv.DictReader(history)] == list(range(epochs))
    assert runs.load_saved_model(run_dir).epoch in range(epochs)
    assert not [p.name for p in run_dir.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    shutil.rmtree(run_dir)  # before the disk goes


# ---------------------------------------------------------------- tune


def trial_runs(run_dir: Path) -> dict[str, Path]:
    return {folder.name.removeprefix("trial-"): folder for folder in sorted((run_dir / "train_runs").glob("trial-*"))}


def checkpointed_epochs(trial_run: Path) -> list[int]:
    """The epochs the newest loadable checkpoint of a trial's Train run holds, in order."""
    for folder in reversed(runs.checkpoint_dirs(trial_run)):
        try:
            return [int(row["epoch"]) for row in runs.load_checkpoint(folder).state.history]
        except UserError:
            continue
    return []


def alsoview_line(command: Command) -> str:
    """The command's own last line (`alsoview: ...`): Ray's forwarded worker lines may come after it."""
    return next((line for line in reversed(command.lines) if line.startswith("alsoview: ")), "")


@pytest.mark.ray  # each command starts a private Ray instance, as a user's would
def test_tune_stopped_killed_and_run_twice_at_once_resumes_and_trains_each_epoch_once(tmp_path, commands):
    name, epochs = "search", 3
    run_dir = tmp_path / "home" / "runs" / name
    env = {**os.environ, "ALSOVIEW_HOME": str(tmp_path / "home")}
    # A grace period of all the epochs: ASHA stops no trial, so each trial's every epoch is checked.
    args = (
        "tune", "--no-final", "--config", "configs/smoke.yaml", f"tune.name={name}", "tune.num_samples=2",
        f"tune.max_epochs={epochs}", f"tune.grace_period={epochs}", "train.num_workers=1", "train.max_failures=0",
    )  # fmt: skip

    def tune() -> Command:
        return commands(*args, env=env)

    def newest_epochs() -> dict[str, int]:
        return {trial: max(found) for trial, run in trial_runs(run_dir).items() if (found := loadable_epochs(run))}

    # 1. Ctrl-C once a trial has ended an epoch: Tune saves its state and returns as if the search
    #    had ended; the command says it was stopped and how to resume, 130, and writes no results.
    first = tune()
    first.wait_for(r"trial-\w+ epoch 0:")
    first.ctrl_c()
    assert first.finish() == 130, first.output()
    assert re.fullmatch(
        r"alsoview: interrupted: search stopped when [12] of its 2 trials had started; run the same command "
        r"again to resume it \(the trials not finished continue from their checkpoints\)",
        alsoview_line(first),
    ), first.output()
    first.wait_until_ray_is_gone()
    assert not (run_dir / "trials.csv").exists()
    newest = newest_epochs()
    assert newest, "no trial checkpointed its first epoch"

    # 2. The same command restores the experiment; each trial with a checkpoint resumes from its
    #    newest. kill -9 the moment a trial ends, before Tune has saved that (the state it saved
    #    last has the trial running).
    second = tune()
    second.wait_for(rf"resuming the experiment in {re.escape(str(run_dir))}")
    ended = second.wait_for(rf"trial (\w+) ended after {epochs} epochs: .* \(1 of 2 ended\)").group(1)
    second.kill_9()
    assert second.finish() == -signal.SIGKILL
    resumed = {
        m.group(1): int(m.group(2))
        for line in second.lines
        for m in [re.search(r"trial-(\w+) resumed from the checkpoint of epoch (\d+)", line)]
        if m
    }
    # The trial that ended resumed before it trained on; the other may not have said so yet when
    # the command was killed. Each that did resumed from its newest checkpoint.
    assert ended in resumed or ended not in newest, second.output()
    assert resumed.items() <= newest.items(), (resumed, newest, second.output())
    second.wait_until_ray_is_gone()

    # 3. Again: a second search of the same name meanwhile is refused in one line (2); this one ends
    #    with both trials completed, each trial's epochs trained once each, and its results written.
    third = tune()
    lock = run_dir / runs.RUN_LOCK
    wait_for_file(lock, str(third.pid))
    third.stop()  # it holds the search; paused, so that the second surely finds it taken
    again = tune()
    assert again.finish() == 2, again.output()
    assert alsoview_line(again) == (
        f"alsoview: error: tune.name={name} is in use: another process (pid {third.pid}) holds {lock}; "
        "wait for that search to end (the same command then resumes it), or choose another tune.name"
    )
    third.go_on()
    assert third.finish() == 0, third.output()
    assert "trials: 2 (2 completed, 0 stopped early by ASHA, 0 failed)" in third.output()
    with open(run_dir / "trials.csv", newline="") as table:
        assert sorted(row["status"] for row in csv.DictReader(table)) == ["completed", "completed"]
    trained = trial_runs(run_dir)
    assert len(trained) == 2 and ended in trained
    for trial_run in trained.values():
        assert checkpointed_epochs(trial_run) == list(range(epochs)), trial_run.name
    # The trial that had ended is not trained again: at most its last epoch is reported again,
    # where the restored state had it running.
    assert set(printed_epochs(third, f"trial-{ended}")) <= {epochs - 1}, third.output()
