"""`ray job submit` against a local head, exactly as the README describes (token auth on)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from processes import Watched, descendants, is_loopback, listening_addresses, processes_with_env, running

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAD_MARKER = "ALSOVIEW_TEST_RAY_HEAD"
# The README's single-machine head: Ray's switch that keeps every listener on 127.0.0.1.
SINGLE_MACHINE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass
class Head:
    """A `ray start --head` of this test only: its own temp dir and ports, stopped by its PIDs
    (found by a marker in the environment every process of the head inherits)."""

    temp_dir: Path
    dashboard: str
    marker: str

    def processes(self) -> list[int]:
        """The head's processes and all below them: Ray's agents and workers rename themselves
        (setproctitle), which overwrites their copy of the environment, so they are found as
        children of the raylet."""
        marked = processes_with_env(HEAD_MARKER, self.marker)
        return sorted({*marked, *(child for pid in marked for child in descendants(pid))})

    def listeners(self) -> dict[int, set[str]]:
        return listening_addresses(self.processes())


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def _ray(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), *args], capture_output=True, text=True, timeout=timeout, env=_env(**env), cwd=ROOT
    )


def _wait_for_dashboard(url: str, deadline: float) -> None:
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as exc:
            if "401" in str(exc) or "403" in str(exc):
                return  # up, and asking for the token
            time.sleep(1)
    raise AssertionError(f"the Ray dashboard did not come up on {url}")


def _stop(head: Head) -> None:
    """`ray stop` ends every Ray on the machine; this ends only the processes of this head. They
    are collected before the first signal: once the raylet is gone its orphans are not below it."""
    pids = set(head.processes())
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        pids |= set(head.processes())
        for pid in running(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + wait
        while running(pids) and time.time() < deadline:
            time.sleep(0.5)
    assert not running(pids), "the test's Ray head left processes behind"


@pytest.fixture(scope="module")
def ray_head():
    """A head started the README's way (loopback, token auth), on ports and a temp dir of its own."""
    import ray

    from alsoview.distributed.runtime import DASHBOARD_PORT, free_port, port_is_free

    assert not ray.is_initialized(), "the job test must run before any test that starts Ray in-process"
    # Ray 2.60: `ray start` with token auth needs a token to exist; this makes one if there is none.
    generated = _ray("get-auth-token", "--generate")
    assert generated.returncode == 0, generated.stderr
    temp_dir = Path(tempfile.mkdtemp(prefix="avray-", dir="/tmp"))  # short: Ray's socket paths live in it
    # The README's address (8265) when it is free here, so its job command runs as written.
    dashboard_port = DASHBOARD_PORT if port_is_free(DASHBOARD_PORT) else free_port()
    head = Head(temp_dir, f"http://127.0.0.1:{dashboard_port}", marker=temp_dir.name)
    started = _ray(
        "start", "--head", "--num-cpus=2", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir}", f"--port={free_port()}", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        **{HEAD_MARKER: head.marker, **SINGLE_MACHINE},
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        _wait_for_dashboard(head.dashboard, time.time() + 60)
        yield head
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


README_JOB = re.compile(r"RAY_AUTH_MODE=token ray job submit .*?-- python rayjobs/tune\.py [^\n`]*", re.S)
# What the suite changes in the README's job command: only trial and epoch counts (appended), and the
# address when 8265 is taken on this machine. The storage root is the suite's ALSOVIEW_HOME, which
# the job's driver inherits from the head (the head inherits this process's environment).
JOB_COUNTS = ["tune.num_samples=1", "tune.max_epochs=1", "train.epochs=1"]


def _readme_job_command(dashboard: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    found = README_JOB.search(text)
    assert found, "the README's `ray job submit ... rayjobs/tune.py` command was not found"
    words = shlex.split(found.group(0).replace("\\\n", " "))
    assert words[:2] == ["RAY_AUTH_MODE=token", "ray"], words
    words = [dashboard if w == "http://127.0.0.1:8265" else w for w in words[2:]]  # the arguments of `ray`
    return [*words, *JOB_COUNTS]


@pytest.mark.ray_cluster
def test_the_readme_job_runs_on_a_two_cpu_head_as_written(ray_head):
    """The README's main job, `ray job submit ... -- python rayjobs/tune.py --config configs/smoke.yaml`,
    on a 2-CPU head started the README's way (loopback, token auth), with the smoke config's two
    workers unchanged: it ends with trials.csv, report.md and a recommendable model in best/,
    written under the storage root, not into Ray's temporary copy of the working directory."""
    home = Path(os.environ["ALSOVIEW_HOME"])
    argv = _readme_job_command(ray_head.dashboard)
    assert "--no-wait" not in argv  # the README's command waits and streams the job's log
    submitted = Watched(
        subprocess.Popen(
            [str(BIN / "ray"), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT
        )
    )
    logs = submitted.finish(silence=600)  # the job's log streams while it runs: bounded by silence, not time
    assert submitted.proc.returncode == 0, logs[-4000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", logs), logs[-4000:]
    assert "best valid/full/ndcg@10" in logs
    assert "Starting execution of Dataset" not in logs  # Ray Data's per-epoch chatter is off
    assert "Cluster resources are not enough" not in logs  # the plan makes it impossible; not shown
    assert "worker processes have been started" not in logs
    assert "driver_artifacts" not in logs  # Tune's TensorBoard hint into the Ray session is replaced

    run_dir = home / "runs" / "smoke-tune"
    assert f"tuning run: {run_dir}" in logs and f"final model: {run_dir / 'best'}" in logs
    assert f"tensorboard --logdir {run_dir}" in logs
    assert "1 trials x (trial 0.01 CPU + 2 workers x 0.5 CPU + 2 mixing tasks x 0.495 CPU) = 2 of 2 CPUs" in logs
    assert (home / "data" / "prepared" / "smoke" / "manifest.json").is_file()
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 1
    assert json.loads((run_dir / "best.json").read_text())["trials"] == 1
    report = (run_dir / "report.md").read_text()
    assert "| cooccurrence |" in report and "| model |" in report
    assert "final model (the best trial's checkpoint)" in report

    from alsoview.distributed.recommend import Recommender

    recommender = Recommender.from_run(run_dir / "best")
    top = recommender.recommend([recommender.catalog.user_reviewer_id[1]], 3)
    assert len(top) == 3 and (top["source"] == "model").all()
    # nothing was written into Ray's temporary copy of the working directory (this head's session)
    copies = [
        p for p in (ray_head.temp_dir / "session_latest").glob("runtime_resources/working_dir_files/*") if p.is_dir()
    ]
    assert copies, "the job's working-directory copy was not found"
    assert not [p for copy in copies for p in copy.iterdir() if p.name in ("runs", "data")]


def test_job_cli_without_token_mode_is_refused(ray_head):
    """Token authentication stays on: without RAY_AUTH_MODE=token the CLI is turned away."""
    env = {k: v for k, v in _env().items() if k != "RAY_AUTH_MODE"}
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "list", "--address", ray_head.dashboard],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode != 0
    assert re.search(r"[Aa]uthentication|token", proc.stdout + proc.stderr)


def test_a_single_machine_head_listens_on_loopback_only(ray_head):
    """The README's local head (with Ray's single-machine switch): GCS, raylet, dashboard, agents,
    client server and workers all listen on 127.0.0.1; token authentication stays on."""
    listeners = ray_head.listeners()
    assert len(listeners) >= 4, listeners  # the head's processes were found
    exposed = {pid: sorted(a for a in addresses if not is_loopback(a)) for pid, addresses in listeners.items()}
    assert not any(exposed.values()), exposed
