"""`alsoview serve`: a run's recommendations over HTTP, as a Ray Serve application.

One deployment, `Recommendations`, holds a `Recommender` per replica and answers

    POST /recommend  {"user_id": ...} or {"items": [asin, ...]}, "k", "exclude_seen"
    POST /similar    {"asin": ..., "k", "by"}
    GET  /healthz    200 once a model is loaded
    GET  /model      the run served: its name, when it was trained, its test metrics

(bodies checked in `serve_api.py`: a bad one is a 400 with one line). Concurrent /recommend
requests are batched (`serve.batch`) into one scoring pass over every item per kind of query.

The run served is the deployment's `user_config` ({"run": <run directory>}), never anything a
request sends. The application is deployed as a Serve config (`serve_config`, what `serve deploy`
reads), so pointing it at another run is Serve's lightweight update: each running replica's
`reconfigure` loads the new run in a thread while the old model keeps answering, then swaps the
reference; no replica restarts and no request waits for a model load.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve

from alsoview.distributed import ray_internals
from alsoview.distributed.recommend import Recommender
from alsoview.distributed.serve_api import (
    MAX_BODY_BYTES,
    BadRequest,
    answer_recommend,
    answer_similar,
    parse_recommend,
    parse_similar,
)
from alsoview.errors import RunFailedError, UserError, first_line
from alsoview.logs import verbose
from alsoview.training.checkpoint import MODEL_FILE, find_run, load_saved_model, read_evaluation, read_metrics

log = logging.getLogger("alsoview")

APP_NAME = "alsoview"
DEPLOYMENT_NAME = "Recommendations"
IMPORT_PATH = "alsoview.distributed.serve:application"
# Serve's own default of 5 requests in flight per replica would cap every batch at 5
MAX_ONGOING_REQUESTS = 128
READY_SECONDS = 300.0  # a replica loads the catalog and the model; Serve reports a failed start itself


@dataclass(frozen=True)
class Served:
    """The model a replica answers with, and what /model says about it."""

    recommender: Recommender
    name: str
    description: dict[str, Any]


def run_name(run_dir: Path) -> str:
    """A run's name as `--run` takes it: a search's final model is `<search>/best`."""
    return f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name == "best" else run_dir.name


def load_served(run: str | Path) -> Served:
    """The run's Recommender and its description (model.pt read with weights_only)."""
    run_dir = find_run(run)
    recommender = Recommender.from_run(run_dir)
    return Served(recommender, run_name(run_dir), describe(run_dir, recommender))


def describe(run_dir: Path, recommender: Recommender) -> dict[str, Any]:
    """GET /model: the run's name, when model.pt was written, its best epoch and validation and
    test metrics (where the run has them), and the catalog's size."""
    metrics = read_metrics(run_dir)
    catalog = recommender.catalog
    return {
        "run": run_name(run_dir),
        "trained": trained_at(run_dir),
        "best_epoch": metrics.get("best/epoch"),
        "valid": {k.removeprefix("best/"): v for k, v in metrics.items() if k.startswith("best/valid/")},
        "test": read_evaluation(run_dir).get("model", {}),
        "items": int(catalog.n_items - 1),
        "users": int(catalog.n_users - 1),
    }


def trained_at(run_dir: Path) -> str:
    """When the run's model.pt was written (UTC, to the microsecond: a rewrite is a new model)."""
    written = (run_dir / MODEL_FILE).stat().st_mtime
    return datetime.datetime.fromtimestamp(written, tz=datetime.timezone.utc).isoformat()


class Recommendations:
    """The Serve deployment (`application` wraps it): routes requests to `serve_api`."""

    def __init__(self, max_batch_size: int = 32, batch_wait_ms: float = 10.0, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.served: Served | None = None
        self._recommend_batch.set_max_batch_size(max_batch_size)
        self._recommend_batch.set_batch_wait_timeout_s(batch_wait_ms / 1000.0)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the run `user_config["run"]` names beside the one answering, then swap (Serve
        calls this when the user_config changes: another run, or the same run's model.pt
        written again, `serve_config`)."""
        run = user_config.get("run") if isinstance(user_config, dict) else None
        if not run:
            raise ValueError('the Serve deployment needs user_config {"run": <run directory>}')
        served = await asyncio.to_thread(load_served, run)
        before, self.served = self.served, served
        log.info("serving %s%s", served.name, f" (was {before.name})" if before else "")

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            status, answer = await self._route(request)
        except BadRequest as exc:
            status, answer = 400, {"error": str(exc)}
        except UserError as exc:
            status, answer = 400, {"error": str(exc)}
        except Exception:
            log.exception("serving %s %s failed", request.method, request.url.path)
            status, answer = 500, {"error": "internal error; the replica's log holds the traceback"}
        return JSONResponse(answer, status_code=status)

    async def _route(self, request: Any) -> tuple[int, dict[str, Any]]:
        routes = {"/recommend": "POST", "/similar": "POST", "/healthz": "GET", "/model": "GET"}
        path = request.url.path.rstrip("/") or "/"
        if path not in routes:
            return 404, {"error": f"no endpoint {path[:80]}; endpoints: {', '.join(routes)}"}
        if request.method != routes[path]:
            return 405, {"error": f"{path} takes {routes[path]}"}
        served = self.served
        if served is None:
            return 503, {"error": "no model loaded yet"}
        if path == "/healthz":
            return 200, {"status": "ok", "model": served.name}
        if path == "/model":
            return 200, served.description
        body = await _bounded_body(request)
        if path == "/similar":
            query = parse_similar(body)
            return 200, await asyncio.to_thread(answer_similar, served.recommender, query, served.name)
        answer = await self._recommend_batch(parse_recommend(body))
        return (400 if "error" in answer else 200), answer

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)  # sizes set per replica in __init__
    async def _recommend_batch(self, queries: list) -> list[dict[str, Any]]:
        """Requests arriving together, scored in one pass (the model of the moment for all)."""
        served = self.served
        return await asyncio.to_thread(answer_recommend, served.recommender, queries, served.name)


async def _bounded_body(request: Any) -> bytes:
    """The body, refused as soon as it passes MAX_BODY_BYTES (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BadRequest(f"request body must be at most {MAX_BODY_BYTES:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"request body must be at most {MAX_BODY_BYTES:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def application(args: dict[str, Any]) -> Any:
    """The Serve application builder the config's `import_path` names."""
    deployment = serve.deployment(Recommendations, name=DEPLOYMENT_NAME)
    return deployment.bind(
        max_batch_size=int(args.get("max_batch_size", 32)),
        batch_wait_ms=float(args.get("batch_wait_ms", 10.0)),
        threads=int(args.get("threads", 1)),
    )


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    cpus_per_replica: float = 1.0
    max_batch_size: int = 32  # 1: no batching
    batch_wait_ms: float = 10.0
    ready_seconds: float = READY_SECONDS  # how long the replicas may take to answer with the run


def serve_config(run_dir: Path, settings: ServeSettings) -> dict[str, Any]:
    """The Serve config file's contents (`serve deploy` reads the same as YAML)."""
    threads = max(1, int(settings.cpus_per_replica))
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": settings.host, "port": settings.port},
        # Serve's INFO lines and one access line per request go to its log files, not the console
        "logging_config": {"log_level": "INFO" if verbose() else "WARNING", "enable_access_log": verbose()},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {
                    "max_batch_size": settings.max_batch_size,
                    "batch_wait_ms": settings.batch_wait_ms,
                    "threads": threads,
                },
                "deployments": [
                    {
                        "name": DEPLOYMENT_NAME,
                        "num_replicas": settings.replicas,
                        "max_ongoing_requests": MAX_ONGOING_REQUESTS,
                        # the file's time too: a run whose model.pt was written again is a change
                        "user_config": {"run": str(run_dir), "model_written_ns": _written_ns(run_dir)},
                        "ray_actor_options": {"num_cpus": settings.cpus_per_replica},
                    }
                ],
            }
        ],
    }


def write_serve_config(run: str | Path, settings: ServeSettings, out: Path) -> dict[str, Any]:
    """The Serve config of `run` as YAML at `out`, for `serve deploy` on a cluster (docs/cluster.md)."""
    import yaml

    from alsoview.storage import check_writable_file

    check_settings(settings)
    run_dir = find_run(run)
    load_saved_model(run_dir)
    check_writable_file(out, "Serve config")
    header = (
        f"# Ray Serve config for alsoview run {run_name(run_dir)}: `serve deploy {out.name}` on the cluster's head.\n"
        "# Deploy it again with another run (or a new model_written_ns) to swap models without downtime.\n"
        "# Serve has no authentication: keep http_options.host inside the network (docs/cluster.md).\n"
    )
    out.write_text(header + yaml.safe_dump(serve_config(run_dir, settings), sort_keys=False))
    return {"run": run_name(run_dir), "path": str(out)}


def _written_ns(run_dir: Path) -> int:
    return (run_dir / MODEL_FILE).stat().st_mtime_ns


def check_settings(settings: ServeSettings) -> None:
    if not 1 <= settings.port <= 65535:
        raise UserError(f"--port must be in [1, 65535], got {settings.port}")
    if not 1 <= settings.replicas <= 256:
        raise UserError(f"--replicas must be in [1, 256], got {settings.replicas}")
    if not 1 <= settings.max_batch_size <= 1024:
        raise UserError(f"--max-batch-size must be in [1, 1024], got {settings.max_batch_size}")
    if not 1.0 <= settings.ready_seconds <= 86_400.0:
        raise UserError(f"--ready-timeout must be in [1, 86400] seconds, got {settings.ready_seconds}")
    if not 0.0 <= settings.batch_wait_ms <= 1000.0:
        raise UserError(f"--batch-wait-ms must be in [0, 1000], got {settings.batch_wait_ms}")


def deploy(run: str | Path, settings: ServeSettings, address: str | None = None) -> dict[str, Any]:
    """Deploy (or point the running application at) `run` and wait until it answers with it;
    returns its /model answer. Ray is joined or started as every command does (runtime.py)."""
    import ray

    from alsoview.distributed.runtime import cluster_to_join, init_ray, port_is_free

    check_settings(settings)
    run_dir = find_run(run)
    load_saved_model(run_dir)  # an unreadable model is one line here, not a replica that never starts
    private = not ray.is_initialized() and cluster_to_join(address)[0] is None
    if private and not port_is_free(settings.port, settings.host):  # on a cluster it may be our own app's
        raise UserError(f"port {settings.port} on {settings.host} is taken; give another with --port")
    log.info(init_ray(address, dashboard=True))  # a config deploy goes through the dashboard
    try:
        ray_internals.deploy_serve_config(serve_config(run_dir, settings))
    except Exception as exc:  # Serve's answer (a port taken, other HTTP options): one line
        raise RunFailedError(f"Serve refused the application: {first_line(exc)}") from None
    return wait_until_serving(run_dir, settings)


def base_url(settings: ServeSettings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def wait_until_serving(run_dir: Path, settings: ServeSettings) -> dict[str, Any]:
    """Poll GET /model until every answer names `run_dir`'s run; a failed deployment, or none
    answering within `settings.ready_seconds`, is one line."""
    seconds = settings.ready_seconds
    want, trained = run_name(run_dir), trained_at(run_dir)
    deadline, last = time.monotonic() + seconds, "no answer yet"
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and str(status.status).endswith("DEPLOY_FAILED"):
            raise RunFailedError(f"the Serve application failed to start: {first_line(status.message)}")
        try:
            with urllib.request.urlopen(base_url(settings) + "/model", timeout=5) as answer:
                described = json.loads(answer.read())
            if (described.get("run"), described.get("trained")) == (want, trained) and _deployment_healthy():
                return described
            last = f"serving {described.get('run')}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = first_line(exc)
        time.sleep(0.5)
    from alsoview.distributed.stall import holders

    raise RunFailedError(
        f"serve stalled: the application did not answer with {want} within {seconds:.0f}s ({last}); "
        f"Serve says: {_serve_message()}; {holders()}; free CPUs or lower --cpus-per-replica / --replicas"
    )


def _serve_message() -> str:
    """What Serve says about the deployment (a replica that cannot be scheduled names its wait)."""
    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return "no application yet"
    deployment = app.deployments.get(DEPLOYMENT_NAME)
    message = (deployment.message if deployment is not None else "") or app.message or str(app.status)
    return first_line(message)[:300]


def _deployment_healthy() -> bool:
    """Whether Serve reports the deployment HEALTHY: every replica's reconfigure has returned."""
    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return False
    deployment = app.deployments.get(DEPLOYMENT_NAME)
    return deployment is not None and str(deployment.status).endswith("HEALTHY")


def shutdown() -> None:
    """Stop Serve on this Ray instance (its proxy, controller and replicas)."""
    serve.shutdown()


def block_until_interrupted() -> None:
    """Keep the foreground command alive (its private Ray instance with it) until Ctrl-C or SIGTERM."""
    import signal

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    for number in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job starts with it ignored
        signal.signal(number, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    for number in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut Serve's shutdown short
        signal.signal(number, signal.SIG_IGN)
