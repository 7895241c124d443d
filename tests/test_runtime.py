"""Joining Ray on purpose: which cluster a run uses, one-line connection failures, two local runs at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from alsoview import runtime

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


def test_two_local_runs_at_once_both_finish(smoke_config):
    """Each run starts a private Ray instance: neither joins the other's (nor this suite's)."""
    common = [
        "train",
        "--config",
        "configs/smoke.yaml",
        f"data.generated_dir={smoke_config.data.generated_dir}",
        f"data.prepared_dir={smoke_config.data.prepared_dir}",
        f"train.runs_dir={smoke_config.train.runs_dir}",
        "train.num_workers=1",
        "train.epochs=1",
        "train.valid_users=100",
    ]
    runs = [_alsoview(*common, f"train.run_name=parallel-{i}") for i in range(2)]
    outputs = [proc.communicate(timeout=600)[0] for proc in runs]
    for proc, out in zip(runs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "started a private local Ray instance on 127.0.0.1" in out
        assert "alsoview: error" not in out
    dashboards = {
        line.rsplit("dashboard ", 1)[1].split()[0]
        for out in outputs
        for line in out.splitlines()
        if "started a private local Ray instance" in line
    }
    assert len(dashboards) == 2, dashboards  # one dashboard each, on different ports
    for i in range(2):
        assert (Path(smoke_config.train.runs_dir) / f"parallel-{i}" / "model.pt").is_file()
