"""Serving under load: `alsoview serve`'s latency and throughput against a do-nothing Serve
deployment on the same machine, batching on and off, at the Video Games scale and at 16 times
as many items; and a model swap under load.

    python benchmarks/serving.py [--requests 5000] [--concurrency 1,8,32] [--scales 1,16]
    python benchmarks/serving.py --client wrk --wrk-seconds 15 --scales 1 --no-swap

Each row sends a bounded number of POST /recommend requests ({"user_id", "k": 10}, users drawn
with a fixed seed) to 127.0.0.1 from an asyncio client holding `concurrency` requests in flight,
(or, with `--client wrk`, from wrk for a bounded time, one thread and `concurrency` connections)
and reports p50 / p95 / p99 latency (from send to the whole answer read) and requests per
second. The client, Serve's proxy and the replica share this machine's CPUs, for the floor as
for the model, so `cost vs floor` (the model's mean latency over the floor's at the same
concurrency) is the project's share of a request. The floor is a Serve deployment that reads the
body and answers a fixed JSON object, with the same replica CPU and in-flight limits.

The model is the recommended settings (configs/video_games.yaml: user history, dot product, the
co-occurrence and recent-relations heads) built on the dataset with its initial weights: scoring
costs the same whatever the weights. The 1x dataset is the generated Video-Games-scale one
(55,000 users, 17,000 games); the 16x dataset is the same users and interactions with every
game's row repeated 16 times under new asins (the extra games nobody reviewed), so only the
catalog grows. Before the load, the served answers are checked against `Recommender.recommend`,
what `alsoview recommend` prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import BENCH_DATA, ROOT, command_line, ensure_vg_prepared, print_table, ray_local, write_json

SERVING_DATA = BENCH_DATA / "serving"
PORT = 8329


def tiled_dataset(source: Path, out: Path, times: int) -> Path:
    """`source`'s prepared dataset with every item repeated `times` times (new ids and asins,
    links to the copies of the same items), its users and interactions as they are."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from alsoview.data import layout

    if (out / layout.MANIFEST).is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in layout.FILES:
        if name not in (layout.ITEMS, layout.MANIFEST):
            shutil.copy2(source / name, out / name)
    items = pq.read_table(source / layout.ITEMS).combine_chunks()
    n, schema = items.num_rows, items.schema

    def shifted(name: str, copy: int) -> pa.Array:
        column = items.column(name).chunk(0)
        if name in ("also_view", "also_buy"):  # links to the same copy's items
            values = pa.array(column.values.to_numpy() + copy * n, type=column.type.value_type)
            return pa.ListArray.from_arrays(column.offsets, values, type=column.type)
        if name == "asin":
            return pa.array([f"{a}-{copy}" for a in column.to_pylist()], type=column.type)
        return pa.array(column.to_numpy() + copy * n, type=column.type)

    copies = [items]
    for copy in range(1, times):
        columns = [
            shifted(f.name, copy) if f.name in ("item_idx", "asin", "also_view", "also_buy") else items.column(f.name)
            for f in schema
        ]
        copies.append(pa.Table.from_arrays(columns, schema=schema))
    pq.write_table(pa.concat_tables(copies), out / layout.ITEMS)
    manifest = json.loads((source / layout.MANIFEST).read_text())
    manifest["benchmark"] = f"items of {source} repeated {times} times"
    (out / layout.MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


def make_run(prepared: Path, run_dir: Path) -> Path:
    """A run folder holding the recommended settings' model at its initial weights on `prepared`."""
    from alsoview.config import load_config
    from alsoview.data.catalog import load_catalog
    from alsoview.model import build_model
    from alsoview.training.checkpoint import LoopState, SavedCheckpoint, write_run_outputs

    if (run_dir / "model.pt").is_file():
        return run_dir
    config = load_config(
        [str(ROOT / "configs" / "video_games.yaml")], [f"data.prepared_dir={prepared}", "text.encoder=hashing"]
    )
    catalog = load_catalog(prepared)
    state = build_model(catalog, config.model, config.seed).state_dict()
    loop = LoopState(epoch=0, best_epoch=0, best_model_state=state, history=[{"epoch": 0, "resumed_from_epoch": None}])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_outputs(run_dir, SavedCheckpoint(state, {}, catalog.vocabulary(), config, loop), str(prepared))
    return run_dir


async def _load(url: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """Send every body with `concurrency` in flight; latency per request, failures counted."""
    import aiohttp

    latencies: list[float] = []
    failures: dict[str, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
                        await answer.read()
                        if answer.status != 200:
                            failures[str(answer.status)] = failures.get(str(answer.status), 0) + 1
                            continue
                except Exception as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000.0
    return {
        "requests": len(bodies),
        "failed": sum(failures.values()),
        "failures": failures,
        "seconds": round(seconds, 3),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p95_ms": round(float(np.percentile(ms, 95)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "mean_ms": round(float(ms.mean()), 3) if len(ms) else None,
    }


# wrk's Lua hooks: POST the bodies in turn; at the end, one line of JSON with the counts and
# the latency percentiles (wrk's own --latency table has no p95).
WRK_SCRIPT = """
local bodies = {%s}
local next_body = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  next_body = next_body %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "socket_errors": %%d, "status_errors": %%d, '
    .. '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d, "mean_us": %%f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
"""


class LoadClient:
    """Who sends the load: Python's aiohttp (a bounded count of requests) or wrk, a C client that
    takes less of the CPUs the server shares (a bounded time; `requests` is what it sent)."""

    def __init__(self, kind: str, wrk_seconds: float = 20.0) -> None:
        if kind == "wrk" and shutil.which("wrk") is None:
            raise SystemExit("--client wrk: no wrk on PATH (Debian: apt-get install wrk)")
        self.kind, self.wrk_seconds = kind, wrk_seconds

    def run(self, url: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
        if self.kind == "wrk":
            _wrk(url, bodies, concurrency, 3.0)  # warm: connections, caches
            return _wrk(url, bodies, concurrency, self.wrk_seconds)
        asyncio.run(_load(url, bodies[: max(50, concurrency * 4)], concurrency))  # warm: connections, caches
        return asyncio.run(_load(url, bodies, concurrency))


def _wrk(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    """One wrk run (one thread, `concurrency` connections) for `seconds`; its JSON line parsed."""
    import subprocess
    import tempfile

    listed = ", ".join(f"[==[{body.decode()}]==]" for body in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % listed)
    try:
        printed = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "60s", "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 120,
        ).stdout  # fmt: skip
    finally:
        Path(script.name).unlink()
    line = next((line for line in printed.splitlines() if line.startswith("WRK_RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result line:\n{printed}")
    found = json.loads(line.removeprefix("WRK_RESULT "))
    seconds_run = found["duration_us"] / 1e6
    failed = found["socket_errors"] + found["status_errors"]
    return {
        "requests": found["requests"],
        "failed": failed,
        "failures": {"socket": found["socket_errors"], "status": found["status_errors"]} if failed else {},
        "seconds": round(seconds_run, 3),
        "rps": round((found["requests"] - failed) / seconds_run, 1),
        "p50_ms": round(found["p50_us"] / 1000.0, 2),
        "p95_ms": round(found["p95_us"] / 1000.0, 2),
        "p99_ms": round(found["p99_us"] / 1000.0, 2),
        "mean_ms": round(found["mean_us"] / 1000.0, 3),
    }


def user_bodies(run_dir: Path, count: int, seed: int = 0) -> tuple[list[bytes], list[str]]:
    from alsoview.data.catalog import load_catalog

    catalog = load_catalog(run_dir / "dataset")
    users = np.random.default_rng(seed).integers(1, catalog.n_users, size=count)
    ids = [str(catalog.user_reviewer_id[u]) for u in users]
    return [json.dumps({"user_id": u, "k": 10}).encode() for u in ids], ids


def check_answers(url: str, run_dir: Path, users: list[str]) -> int:
    """The served top-10 of each user equals `Recommender.recommend`'s; returns users checked."""
    import urllib.request

    from alsoview.distributed.recommend import Recommender

    recommender = Recommender.from_run(run_dir)
    for user in users:
        request = urllib.request.Request(url, data=json.dumps({"user_id": user, "k": 10}).encode())
        with urllib.request.urlopen(request, timeout=60) as answer:
            served = [item["asin"] for item in json.loads(answer.read())["items"]]
        expected = list(recommender.recommend([user], 10)["asin"])
        if served != expected:
            raise SystemExit(f"served answer for {user} differs from the Recommender's: {served} vs {expected}")
    return len(users)


def floor_rows(client: LoadClient, bodies: list[bytes], concurrencies: list[int]) -> list[dict[str, Any]]:
    """The do-nothing deployment's rows, deployed on its own, then deleted."""
    from ray import serve
    from starlette.responses import JSONResponse

    from alsoview.distributed.serve import MAX_ONGOING_REQUESTS

    @serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, ray_actor_options={"num_cpus": 1})
    class DoNothing:
        async def __call__(self, request: Any) -> Any:
            await request.body()
            return JSONResponse({"items": [], "model": "none", "fallback": None})

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(DoNothing.bind(), name="floor", route_prefix="/")
    rows = []
    for concurrency in concurrencies:
        row = {"server": "do-nothing Serve deployment", "items": 0, "batching": "-", "concurrency": concurrency}
        rows.append({**row, **client.run(f"http://127.0.0.1:{PORT}/recommend", bodies, concurrency)})
        print(rows[-1], flush=True)
    serve.delete("floor")
    return rows


def model_rows(
    client: LoadClient, run_dir: Path, bodies: list[bytes], concurrencies: list[int], batch: int, n_items: int
) -> list[dict[str, Any]]:
    from alsoview.distributed import serve

    settings = serve.ServeSettings(port=PORT, max_batch_size=batch)
    serve.deploy(run_dir, settings)
    rows = []
    for concurrency in concurrencies:
        row = {
            "server": "alsoview serve",
            "items": n_items,
            "batching": f"up to {batch}" if batch > 1 else "off",
            "concurrency": concurrency,
        }
        rows.append({**row, **client.run(f"{serve.base_url(settings)}/recommend", bodies, concurrency)})
        print(rows[-1], flush=True)
    return rows


def swap_under_load(client: LoadClient, run_dir: Path, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """Requests at `concurrency` while the application is pointed at a copy of the run and back."""
    import threading

    from alsoview.distributed import serve

    other = run_dir.parent / f"{run_dir.name}-copy"
    if not other.is_dir():
        shutil.copytree(run_dir, other)
    settings = serve.ServeSettings(port=PORT)
    serve.deploy(run_dir, settings)
    result: dict[str, Any] = {}
    loader = threading.Thread(
        target=lambda: result.update(client.run(f"{serve.base_url(settings)}/recommend", bodies, concurrency))
    )
    loader.start()
    time.sleep(2.0)
    began = time.perf_counter()
    serve.deploy(other, settings)
    swapped = time.perf_counter() - began
    serve.deploy(run_dir, settings)
    loader.join()
    return {"concurrency": concurrency, "swaps": 2, "first_swap_seconds": round(swapped, 2), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per row at 1x")
    parser.add_argument(
        "--requests-16x", type=int, default=1000, help="requests per row at 16x (each scores 272,000 items)"
    )
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--scales", default="1,16")
    parser.add_argument("--batch-sizes", default="32,1", help="the replica's max batch size per row set (1: off)")
    parser.add_argument(
        "--client", choices=("aiohttp", "wrk"), default="aiohttp", help="wrk takes less of the shared CPUs"
    )
    parser.add_argument("--wrk-seconds", type=float, default=20.0, help="--client wrk: seconds per row")
    parser.add_argument("--swap", action=argparse.BooleanOptionalAction, default=True, help="the swap under load")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    scales = [int(s) for s in args.scales.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    client = LoadClient(args.client, args.wrk_seconds)
    ray_local(2)
    from alsoview.distributed import serve

    base = ensure_vg_prepared()
    rows: list[dict[str, Any]] = []
    checked = {}
    bodies_1x, users = user_bodies(make_run(base, SERVING_DATA / "run-1x"), args.requests)
    rows += floor_rows(client, bodies_1x, concurrencies)
    for scale in scales:
        prepared = base if scale == 1 else tiled_dataset(base, SERVING_DATA / f"prepared-{scale}x", scale)
        run_dir = make_run(prepared, SERVING_DATA / f"run-{scale}x")
        count = args.requests if scale == 1 else args.requests_16x
        bodies = bodies_1x[:count]
        from alsoview.data.catalog import load_catalog

        n_items = load_catalog(prepared).n_items - 1
        for batch in batch_sizes:
            rows += model_rows(client, run_dir, bodies, concurrencies, batch, n_items)
            if f"{scale}x" not in checked:
                checked[f"{scale}x"] = check_answers(f"http://127.0.0.1:{PORT}/recommend", run_dir, users[:20])
    swap = swap_under_load(client, SERVING_DATA / "run-1x", bodies_1x[:3000], 8) if args.swap else None
    serve.shutdown()
    floor = {r["concurrency"]: r["mean_ms"] for r in rows if r["items"] == 0}
    for row in rows:
        row["cost_vs_floor"] = round(row["mean_ms"] / floor[row["concurrency"]], 2) if row["items"] else 1.0
    columns = [
        "server",
        "items",
        "batching",
        "concurrency",
        "requests",
        "failed",
        "rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "cost_vs_floor",
    ]
    title = f"POST /recommend, top-10 of a known user, on 127.0.0.1 ({args.client} client)"
    table = print_table(title, rows, columns)
    print(f"swap under load: {swap}")
    write_json(
        "serving" if args.client == "aiohttp" else f"serving-{args.client}",
        {
            "command": command_line("benchmarks/serving.py", args),
            "rows": rows,
            "swap_under_load": swap,
            "answers_checked_against_recommender": checked,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
