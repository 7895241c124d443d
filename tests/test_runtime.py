"""Joining Ray on purpose: which cluster a run uses, one-line connection failures, two local runs at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from processes import Watched, descendants, is_loopback, listening_addresses

from alsoview.distributed import runtime

ROOT = Path(__file__).resolve().parents[1]


def test_a_cluster_is_joined_only_when_asked_for(monkeypatch, tmp_path):
    record = tmp_path / "ray_current_cluster"
    monkeypatch.setattr(runtime, "recorded_head_file", lambda: record)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runtime.cluster_to_join() == (None, "")  # nothing asked: a private local instance
    record.write_text("127.0.0.1:6379\n")
    address, source = runtime.cluster_to_join()
    assert address == "127.0.0.1:6379" and "ray start" in source
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert runtime.cluster_to_join() == ("10.1.2.3:6379", "RAY_ADDRESS or --address")
    assert runtime.cluster_to_join("10.9.9.9:6379") == ("10.9.9.9:6379", "--address")


def test_the_dashboard_moves_off_a_taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert not runtime.port_is_free(taken)
    port = runtime.free_port()
    assert runtime.port_is_free(port)


def _alsoview(*args: str, timeout: float = 600) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        [sys.executable, "-m", "alsoview.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_an_unreachable_cluster_ends_in_one_line(tmp_path):
    with socket.socket() as holder:  # a port nobody listens on
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    proc = _alsoview("evaluate", "--address", f"127.0.0.1:{port}", "--run", str(tmp_path))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    # evaluate reads the run first: no model there is the first mistake it reports
    assert "no trained model" in out
    proc = _alsoview(
        "train",
        "--address",
        f"127.0.0.1:{port}",
        "--config",
        "configs/smoke.yaml",
        f"data.generated_dir={tmp_path / 'raw'}",
        f"data.prepared_dir={tmp_path / 'never'}",
        "data.generate_users=50",
        "data.generate_items=20",
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert f"alsoview: error: no Ray cluster answers at 127.0.0.1:{port}" in out


def test_two_local_runs_at_once_are_independent_and_stop_on_ctrl_c(smoke_config):
    """Each run starts a private Ray instance: neither joins the other's (nor this suite's). One
    trains its epoch and ends normally; the other gets Ctrl-C after its first epoch: exit code 130
    and one line saying how to resume. (A run that loses a worker, with the node it runs on, is
    test_node_faults.py's.)"""
    common = [
        "train",
        "--config",
        "configs/smoke.yaml",
        # its outputs resolve under the suite's storage root, where smoke_config prepared its data
        "train.num_workers=1",
        "train.valid_users=100",
    ]
    finished = Watched(_alsoview(*common, "train.epochs=1", "train.run_name=parallel-0"))
    interrupted = Watched(_alsoview(*common, "train.epochs=50", "train.run_name=parallel-1"))
    interrupted.wait_for("parallel-1 epoch 0:")
    interrupted.proc.send_signal(signal.SIGINT)

    outputs = [finished.finish(), interrupted.finish(silence=300)]
    assert finished.proc.returncode == 0, outputs[0][-3000:]
    metrics = json.loads((Path(smoke_config.train.runs_dir) / "parallel-0" / "metrics.json").read_text())
    assert metrics["epochs_total"] == 1
    assert interrupted.proc.returncode == 130, outputs[1][-3000:]
    last = outputs[1].strip().splitlines()[-1]
    assert last.startswith("alsoview: interrupted: training stopped; run the same command again to resume"), last
    for out in outputs:
        assert "started a private local Ray instance on 127.0.0.1" in out
        assert "alsoview: error" not in out and "alsoview: failed" not in out
    dashboards = {
        line.rsplit("dashboard ", 1)[1].split()[0]
        for out in outputs
        for line in out.splitlines()
        if "started a private local Ray instance" in line
    }
    assert len(dashboards) == 2, dashboards  # one dashboard each, on different ports


def test_a_private_instance_listens_on_loopback_only(ray_session):
    """Every socket the suite's private instance (and this driver) listens on is on 127.0.0.1."""
    listeners = listening_addresses([os.getpid(), *descendants(os.getpid())])
    assert len(listeners) >= 4, listeners  # GCS, raylet, dashboard, agents at least
    exposed = {pid: sorted(a for a in addresses if not is_loopback(a)) for pid, addresses in listeners.items()}
    assert not any(exposed.values()), exposed


def test_the_readme_train_run_listens_on_loopback_only_from_start_to_end(watched_readme_train):
    """Every listener of the 2-worker README run, sampled through its whole life (the process
    group's rendezvous store and gloo included), is on 127.0.0.1."""
    _, _, listeners = watched_readme_train
    assert listeners.samples >= 20 and len(listeners.seen) >= 4, (listeners.samples, listeners.seen)
    assert not listeners.exposed(), listeners.exposed()


def test_the_rendezvous_store_listens_on_the_address_it_is_given_only():
    """torch's own TCPStore listens on every interface; process_group's listens on the address."""
    import torch.distributed as dist

    from alsoview.distributed.process_group import _close_store, _serve_store

    plain = dist.TCPStore("127.0.0.1", 0, 1, True, wait_for_workers=False)
    port = _serve_store("127.0.0.1", 1, 10.0)
    try:
        mine = listening_addresses([os.getpid()])[os.getpid()]
        assert f"127.0.0.1:{port}" in mine
        assert f"0.0.0.0:{plain.port}" in mine or f"[::]:{plain.port}" in mine  # why process_group exists
        assert not any(a.endswith(f":{port}") and not is_loopback(a) for a in mine)
    finally:
        _close_store()
        del plain


def test_a_private_instance_runs_without_ray_trains_preemption_watcher(ray_session):
    """One machine of our own has no node a cloud could take back: Ray Train's controller is told
    (through the driver's environment, which it passes on) not to start the watcher actor."""
    assert os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER") == "0"


def test_ray_trains_controller_polls_its_workers_every_half_second(ray_session):
    """A run waits on the controller's polls (its start, each epoch's report, its end): the
    driver's environment, inherited by the private instance's processes and passed on by Ray
    Train, asks for 0.5 s instead of Ray's 2 s; a trial function (in a Ray worker) sees it too."""
    assert os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S") == "0.5"

    @ray_session.remote(num_cpus=0)
    def seen_by_a_ray_worker() -> str | None:
        return os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")

    assert ray_session.get(seen_by_a_ray_worker.remote()) == "0.5"


class _FakeRay:
    """`ray.init` raising its first `failures` calls, `ray.shutdown` counted: no Ray starts."""

    def __init__(self, monkeypatch, failures: int, initialised: bool = False) -> None:
        import ray

        self.calls: list[dict] = []
        self.shutdowns = 0
        self.failures = failures
        self.initialised = initialised
        monkeypatch.setattr(ray, "init", self.init)
        monkeypatch.setattr(ray, "shutdown", self.shutdown)
        monkeypatch.setattr(ray, "is_initialized", lambda: self.initialised)
        monkeypatch.setattr(runtime, "_stay_on_loopback", lambda: None)  # keeps this process's Ray as it is
        for name in ("RAY_API_SERVER_ADDRESS", runtime.TRAIN_POLL_ENV, "RAY_COLOR_PREFIX", "RAY_AIR_NEW_OUTPUT"):
            monkeypatch.delenv(name, raising=False)  # restored after the test

    def init(self, **kwargs) -> None:
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            raise RuntimeError("Failed to start the dashboard\nThe last 20 lines of its log:\n...")
        self.initialised = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.initialised = False


def test_a_local_start_that_fails_is_tried_once_more(monkeypatch, caplog):
    fake = _FakeRay(monkeypatch, failures=1)
    with caplog.at_level("WARNING", logger="alsoview"):
        line = runtime._start_local(2, dashboard=False)
    assert len(fake.calls) == 2 and fake.shutdowns == 1
    assert line.startswith("started a private local Ray instance on 127.0.0.1 (2 CPUs"), line
    assert line.endswith("no dashboard"), line
    assert "trying once more" in caplog.text and "Failed to start the dashboard" in caplog.text


def test_a_local_start_that_fails_twice_ends_in_one_line_naming_rays_logs(monkeypatch):
    from alsoview.errors import RunFailedError

    fake = _FakeRay(monkeypatch, failures=2)
    try:
        runtime._start_local(2, dashboard=True)
    except RunFailedError as exc:
        message, error = str(exc), exc
    else:
        raise AssertionError("no RunFailedError")
    assert len(fake.calls) == 2 and fake.shutdowns == 2
    assert "\n" not in message and "Failed to start the dashboard" in message, message
    assert f"Ray's logs: {runtime.ray_logs_folder()}" in message
    assert str(runtime.ray_logs_folder()).endswith("session_latest/logs")
    assert error.__cause__ is None and error.__suppress_context__  # no chained traceback


def test_a_command_whose_ray_start_fails_twice_prints_one_line(monkeypatch, capsys, tmp_path):
    """`alsoview prepare` (its inputs fine) when Ray cannot start: exit code 1 and one line."""
    from alsoview import cli

    fake = _FakeRay(monkeypatch, failures=2)
    monkeypatch.setattr(runtime, "cluster_to_join", lambda address=None: (None, ""))
    code = cli.main(
        ["prepare", "--config", str(ROOT / "configs" / "smoke.yaml"), f"data.generated_dir={tmp_path / 'raw'}",
         f"data.prepared_dir={tmp_path / 'prepared'}", "data.generate_users=50", "data.generate_items=20"]
    )  # fmt: skip
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("alsoview: failed:")]
    assert code == 1 and len(fake.calls) == 2, err
    assert len(failed) == 1 and "Ray's logs:" in failed[0], err
    assert "Traceback" not in err


def test_the_dashboard_starts_for_ray_train_and_private_instances_only(monkeypatch):
    started: list[bool] = []
    fake = _FakeRay(monkeypatch, failures=0)
    monkeypatch.setattr(runtime, "_start_local", lambda num_cpus, dashboard: started.append(dashboard) or "started")
    monkeypatch.setattr(runtime, "_STARTED", {})
    monkeypatch.setattr(runtime, "cluster_to_join", lambda address=None: (None, ""))

    def run(**kwargs) -> str:
        line = runtime.init_ray(**kwargs)
        fake.initialised = True
        return line

    assert run() == "started" and started == [False]  # prepare, evaluate, recommend
    assert run().startswith("using the Ray instance already")  # a second command, same process
    assert run(dashboard=True) == "started" and started == [False, True]  # then train: started again
    assert fake.shutdowns == 1
    assert run().startswith("using the Ray instance already") and fake.shutdowns == 1
    fake.initialised = False
    run(private=True)  # tests, benchmarks: one instance serves every kind of run
    assert started[-1] is True


def test_an_instance_this_module_did_not_start_is_used_as_it_is(monkeypatch):
    fake = _FakeRay(monkeypatch, failures=0, initialised=True)  # the user's own ray.init()
    monkeypatch.setattr(runtime, "_STARTED", {})
    assert runtime.init_ray(dashboard=True).startswith("using the Ray instance already")
    assert fake.shutdowns == 0 and not fake.calls
