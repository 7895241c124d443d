"""`alsoview serve` over real HTTP on 127.0.0.1: answers equal the Recommender's for the same
input, bad bodies get a 400 with one line, concurrent requests all succeed, and pointing the
application at another run swaps the model while requests go on, none failing.

The application runs on the suite's Ray instance (one replica, 1 of its 2 CPUs) and is shut
down at the end of the module; the README's command runs as a process of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from alsoview.distributed.runtime import free_port

ROOT = Path(__file__).resolve().parents[1]
README_SERVE = "alsoview serve --run f05 --port 8321"  # as tests/test_readme_commands.py lists it
A_VISITOR = ["B0LVWB28OK", "B0ZEVPFEES"]  # games of the smoke data


def post(url: str, body: bytes | dict, timeout: float = 30.0) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory):
    """The README's run served on the suite's Ray instance: (base url, settings, its Recommender,
    a copy of the run under another name for the swap)."""
    from alsoview.distributed import serve
    from alsoview.distributed.recommend import Recommender

    _, run = trained_run
    other = run.run_dir.parent / "f05-copy"
    shutil.rmtree(other, ignore_errors=True)
    shutil.copytree(run.run_dir, other)
    settings = serve.ServeSettings(port=free_port())
    described = serve.deploy(run.run_dir, settings)
    assert described["run"] == "f05"
    try:
        yield serve.base_url(settings), settings, Recommender.from_run(run.run_dir), other
    finally:
        serve.shutdown()
        shutil.rmtree(other, ignore_errors=True)


def _asins(answer: dict) -> list[str]:
    return [item["asin"] for item in answer["items"]]


def test_answers_equal_the_recommenders(served):
    url, _, recommender, _ = served
    user = str(recommender.catalog.user_reviewer_id[5])
    status, answer = post(f"{url}/recommend", {"user_id": user, "k": 7})
    assert status == 200 and answer["model"] == "f05" and answer["fallback"] is None
    expected = recommender.recommend([user], 7)
    assert _asins(answer) == list(expected["asin"])
    assert [i["score"] for i in answer["items"]] == pytest.approx(list(expected["score"]), rel=1e-6)

    status, answer = post(f"{url}/recommend", {"items": A_VISITOR, "k": 5, "exclude_seen": True})
    frame, fallback = recommender.recommend_items(A_VISITOR, 5)
    assert status == 200 and _asins(answer) == list(frame["asin"]) and answer["fallback"] == fallback
    assert fallback and "co-occurrence" in fallback  # the README's run is the design: a user is an id

    status, answer = post(f"{url}/similar", {"asin": A_VISITOR[0], "k": 4, "by": "cooccurrence"})
    assert status == 200 and _asins(answer) == list(recommender.similar(A_VISITOR[0], 4, "cooccurrence")["asin"])

    status, answer = post(f"{url}/recommend", {"user_id": "not-a-user", "k": 3})
    assert status == 200 and answer["fallback"] == "popularity (unknown user)"

    assert get(f"{url}/healthz") == (200, {"status": "ok", "model": "f05"})
    status, model = get(f"{url}/model")
    assert status == 200 and model["run"] == "f05" and model["items"] == recommender.catalog.n_items - 1
    assert "path" not in model


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/recommend", b"{nope", 400, "not JSON"),
        ("/recommend", {"user_id": "A", "k": 0}, 400, '"k" must be'),
        ("/recommend", {"items": ["NOPE", "B0LVWB28OK"]}, 400, "unknown asin 'NOPE'"),
        ("/recommend", {"user_id": "A", "run": "/etc"}, 400, 'unknown key "run"'),
        ("/recommend", b"x" * 70_000, 400, "at most"),
        ("/similar", {"asin": "NOPE"}, 400, "unknown asin 'NOPE'"),
        ("/elsewhere", {}, 404, "no endpoint /elsewhere"),
        ("/healthz", {}, 405, "/healthz takes GET"),
    ],
)
def test_a_bad_request_gets_one_line_and_no_traceback(served, path, body, status, says):
    url = served[0]
    got, answer = post(f"{url}{path}", body)
    assert got == status and list(answer) == ["error"]
    assert says in answer["error"] and "\n" not in answer["error"] and "Traceback" not in answer["error"]


def test_concurrent_requests_are_answered_as_one_at_a_time(served):
    url, _, recommender, _ = served
    users = [str(u) for u in recommender.catalog.user_reviewer_id[1:41]]
    bodies = [{"user_id": u, "k": 1 + i % 9} for i, u in enumerate(users)] + [{"items": A_VISITOR, "k": 3}] * 8
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda body: post(f"{url}/recommend", body), bodies))
    assert all(status == 200 for status, _ in answers)
    for body, (_, answer) in zip(bodies, answers):
        if "user_id" in body:
            assert _asins(answer) == list(recommender.recommend([body["user_id"]], body["k"])["asin"])
        else:
            assert _asins(answer) == list(recommender.recommend_items(A_VISITOR, 3)[0]["asin"])


def test_another_run_replaces_the_model_while_requests_go_on(served):
    """The same deploy with another run under load: no request fails, the answers name the old
    run until the swap and the new one after it, and the replica was not restarted."""
    from alsoview.distributed import serve

    url, settings, recommender, other = served
    user = str(recommender.catalog.user_reviewer_id[3])
    pid_before = _replica_pid()
    outcomes: list[tuple[int, str, float, float]] = []  # status, model (or error), sent, received
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            status, answer = post(f"{url}/recommend", {"user_id": user, "k": 5})
            outcomes.append((status, answer.get("model", answer.get("error", "")), sent, time.monotonic()))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        while len(outcomes) < 20:  # requests are flowing before the swap
            time.sleep(0.05)
        described = serve.deploy(other, settings)
        after = len(outcomes)
        while len(outcomes) < after + 20:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert described["run"] == "f05-copy"
    counts = Counter((status, model) for status, model, _, _ in outcomes)
    assert set(counts) <= {(200, "f05"), (200, "f05-copy")}, counts
    assert counts[(200, "f05")] >= 20 and counts[(200, "f05-copy")] >= 20
    first_new = min(received for _, model, _, received in outcomes if model == "f05-copy")
    assert all(model == "f05-copy" for _, model, sent, _ in outcomes if sent > first_new)  # never back
    assert _replica_pid() == pid_before  # a reconfigure, not a new replica
    serve.deploy(recommender.run_dir, settings)  # back, for the other tests


def _replica_pid() -> int:
    from ray.util.state import list_actors

    actors = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if "Recommendations" in a.class_name]
    assert len(actors) == 1, actors
    return actors[0].pid


def test_the_readme_serve_command_answers_then_stops(trained_run):
    """`alsoview serve --run f05 --port 8321` as written, in a process of its own (its own
    private Ray instance): it answers the README's requests, and SIGINT stops it with exit 0."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    words = README_SERVE.split()
    process = subprocess.Popen(
        [sys.executable, "-m", "alsoview.cli", *words[1:]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed = []
    try:
        for line in process.stdout:
            printed.append(line)
            if "Ctrl-C stops it" in line or process.poll() is not None:
                break
        assert any(line.startswith("serving f05 ") for line in printed), "".join(printed)
        status, answer = post("http://127.0.0.1:8321/recommend", {"items": A_VISITOR, "k": 3})
        assert status == 200 and len(answer["items"]) == 3, answer
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
        printed.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(printed)
    assert "stopped" in "".join(printed)


def test_the_written_serve_config_is_one_serve_deploy_reads(trained_run, tmp_path, capsys):
    """`--write-config` writes the Serve config (Serve's own schema accepts it) for the run, with
    the run's path in the deployment's user_config and the HTTP options asked for."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from alsoview.cli import main

    _, run = trained_run
    out = tmp_path / "serve.yaml"
    assert main(["serve", "--run", "f05", "--port", "9000", "--replicas", "2", "--write-config", str(out)]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    config = yaml.safe_load(out.read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "alsoview.distributed.serve:application" and schema.http_options.port == 9000
    (deployment,) = app.deployments
    assert deployment.num_replicas == 2 and deployment.user_config["run"] == str(run.run_dir)
