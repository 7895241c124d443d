"""Connecting to Ray on purpose: the cluster the user named, else a private loopback instance.

Ray's own `address="auto"` scans the process list and joins whatever Ray it finds, so a second
local run would join the first run's private instance and die with it. We join a cluster only
when the user asked for one:

1. `address` (`--address`) or RAY_ADDRESS (set for `ray job submit` drivers);
2. a head started on this machine with `ray start` (it records its address in
   `<ray temp dir>/ray_current_cluster`; `ray stop` removes the record);
3. otherwise a private instance (`address="local"`) bound to 127.0.0.1, with token
   authentication on (Ray's default), and with its dashboard (on 8265 or, when that port is taken,
   on a free one) only for the commands that run Ray Train: Train V2 looks its runs up through
   Ray's state API, which the dashboard serves (without it a Tune search with ASHA hung, and a
   plain run's placement-group cleaner warns again and again that it cannot see the controller).
   prepare, evaluate and recommend use Ray Data only and start without it (prepare with it when
   a training run follows in the same process: `prepare.ensure_prepared`).

A private instance that fails to start (a dashboard not up in time on a busy machine) is started
once more, then reported in one line naming Ray's log folder.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alsoview.config import Config, with_absolute_paths
from alsoview.data.catalog import Catalog, load_catalog
from alsoview.distributed import ray_internals
from alsoview.errors import RunFailedError, UserError, first_line
from alsoview.logs import LOG_ENV, quiet_ray, ray_train_log_level, routine_ray_print
from alsoview.training import checkpoint as runs

log = logging.getLogger("alsoview")


@dataclass(frozen=True)
class RunStart:
    config: Config  # with absolute paths
    catalog: Catalog
    run_dir: Path  # made, with the resolved config in it


def start_run(config: Config, run_name: str, catalog: Catalog | None = None) -> RunStart:
    """What train, tune and compare do first: paths made absolute (outputs under the storage
    root), the prepared dataset loaded, Ray joined or started, and `<runs_dir>/<run_name>/` made
    with the config that runs written into it."""
    config = with_absolute_paths(config)
    catalog = catalog or load_catalog(config.data.prepared_dir)
    log.info(init_ray(dashboard=True))  # Ray Train's runs need the state API (module docstring)
    runs_dir = Path(config.train.runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    check_every_node_sees(runs_dir, "train.runs_dir")
    run_dir = runs.start_run_dir(config, runs_dir / run_name)
    return RunStart(config, catalog, run_dir)


NODE_ANSWER_SECONDS = 60.0


def check_every_node_sees(folder: Path, setting: str) -> None:
    """Refuse, before any work, a run whose checkpoints would land on a disk only some nodes see.

    Ray Train's workers write their checkpoints under `folder` on whatever node they run on, and
    a restarted worker, the driver and the final model read them back from theirs: on a folder
    that is not shared (the head's own disk), a worker on another node writes where nobody reads
    and a restart after a lost node starts over or fails (docs/cluster.md). A marker file is
    written here and every live node is asked, by a task pinned to it, whether it reads the same
    file. Nodes that join later are not asked (Ray Train checks again when it saves).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) < 2:
        return  # one machine sees its own disk
    token = uuid.uuid4().hex
    marker = folder / f".alsoview-shared-{token[:12]}"
    marker.write_text(token)
    reads = ray.remote(num_cpus=0, max_retries=0)(_reads_token)
    asked = {
        reads.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            str(marker), token
        ): node
        for node in nodes
    }
    try:
        done, late = ray.wait(list(asked), num_returns=len(asked), timeout=NODE_ANSWER_SECONDS)
        blind = [asked[ref] for ref in done if not ray.get(ref)]
    finally:
        marker.unlink(missing_ok=True)
    if late:
        log.warning(
            "%d of %d Ray nodes did not say within %.0f s whether they see %s=%s: not checked (%s)",
            len(late), len(nodes), NODE_ANSWER_SECONDS, setting, folder, _node_names(asked[ref] for ref in late),
        )  # fmt: skip
    if blind:
        raise UserError(
            f"{setting}={folder} is not shared storage: {len(blind)} of {len(nodes)} Ray nodes do not see "
            f"the file the driver wrote there ({_node_names(blind)}), so checkpoints written on one node "
            f"could not be read after a restart on another; mount one shared file system (NFS, a cloud "
            f"file store) at this path on every node, or point storage= / {setting} at one (docs/cluster.md)"
        )


def _reads_token(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def _node_names(nodes: Any) -> str:
    return ", ".join(f"{node['NodeManagerAddress']} node {node['NodeID'][:8]}" for node in nodes)


DASHBOARD_PORT = 8265
TRAIN_POLL_ENV, TRAIN_POLL_SECONDS = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch: "0" keeps a node on loopback
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def init_ray(
    address: str | None = None, num_cpus: int | None = None, private: bool = False, dashboard: bool | None = None
) -> str:
    """Start or join Ray once per process; returns one line saying what happened.

    `private`: always a private local instance (tests, benchmarks: never a user's cluster).
    `dashboard`: whether a private instance this starts runs the dashboard (module docstring);
    by default only a `private` one does, as it serves every kind of run in its process. An
    instance this module started without one is started again with one when a later call asks.
    """
    import ray

    wants_dashboard = private if dashboard is None else dashboard
    if ray.is_initialized():
        if not (wants_dashboard and _STARTED.get("dashboard") is False):
            quiet_ray()
            return "using the Ray instance already initialised in this process"
        log.info("restarting the private Ray instance with its dashboard (Ray Train needs its state API)")
        ray.shutdown()
    _STARTED.clear()
    # Ray Train's controller polls its workers every 2 s by default, and a run waits on those
    # polls (its start, each epoch's report and checkpoint, its end): 3 smoke epochs took 35.5 s
    # end to end, 28.3 s polled every 0.5 s (a few actor calls a second). Ray Train hands it from
    # a driver to its controller and workers; Tune's trial functions get it from the driver
    # (tune.run_trial). A value the user set is kept.
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_SECONDS)
    quiet_ray()  # before ray.init: the lines it logs itself are filtered too
    ray_internals.drop_driver_prints(routine_ray_print)
    target, source = (None, "") if private else cluster_to_join(address)
    if target is not None:
        described = _connect(target, source)
    else:
        described = _start_local(num_cpus or os.cpu_count() or 1, wants_dashboard)
        _STARTED["dashboard"] = wants_dashboard
    quiet_ray()
    return described


# What this module started in this process: {"dashboard": bool} for a private instance.
_STARTED: dict[str, bool] = {}


def train_logging_config() -> Any:
    """Ray Train's logging for a run's `RunConfig(logging_config=...)`: its INFO lines (resources
    requested, the worker group started, reports) on the console only when verbose; Ray's
    system log files keep them."""
    import ray.train

    return ray.train.LoggingConfig(log_level=ray_train_log_level())


def cluster_to_join(address: str | None = None) -> tuple[str | None, str]:
    """(address, where it came from), or (None, "") when no cluster was asked for."""
    if address:
        return address, "--address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS or --address"
    recorded = recorded_head()
    if recorded is not None:
        return recorded, f"the head started with `ray start` on this machine ({recorded_head_file()})"
    return None, ""


def recorded_head_file() -> Path:
    return ray_internals.recorded_head_file()


def recorded_head() -> str | None:
    path = recorded_head_file()
    text = path.read_text().strip() if path.is_file() else ""
    return text or None


def _connect(target: str, source: str) -> str:
    import ray

    host, _, port = target.split("://")[-1].rpartition(":")
    # Ray retries an unreachable GCS for minutes before it gives up; a refused TCP connection
    # says the same at once (and, for the head `ray start` recorded, that the record is stale).
    if "://" not in target and port.isdigit() and not _accepts_connections(host, int(port)):
        stale = " (a stale record: `ray stop` removes it)" if source.startswith("the head") else ""
        raise UserError(f"no Ray cluster answers at {target} (from {source}){stale}")
    if host in LOOPBACK:
        _stay_on_loopback()  # else Ray rewrites 127.0.0.1 to this machine's network address
    if source.startswith("the head"):
        # As Ray's own `ray.init()` does for the head it finds itself: token authentication when
        # RAY_AUTH_MODE is unset and a token exists (~/.ray/auth_token). An address the user
        # gives (--address, RAY_ADDRESS) gets no token unless RAY_AUTH_MODE=token says so, as in Ray.
        ray_internals.use_local_token_if_present()
    try:
        ray.init(address=target, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        auth = ""
        if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
            auth = f"; if the cluster has token authentication on, set {AUTH_MODE_ENV}=token"
        raise UserError(f"could not connect to the Ray cluster at {target} from {source}: {first}{auth}") from None
    return f"connected to the Ray cluster at {target} ({source})"


AUTH_MODE_ENV = "RAY_AUTH_MODE"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def ray_train_env() -> dict[str, str]:
    """The Ray Train settings this driver set in its environment (the poll interval, the
    preemption watcher, how much to say: -v), for trial functions to set in theirs (tune.run_trial)."""
    names = (TRAIN_POLL_ENV, PREEMPTION_WATCHER_ENV, LOG_ENV)
    return {name: os.environ[name] for name in names if name in os.environ}


START_ATTEMPTS = 2


def _start_local(num_cpus: int, dashboard: bool) -> str:
    import ray

    from alsoview.storage import locked

    _stay_on_loopback()
    # Two runs starting at once would both find 8265 free and the loser's dashboard would fail
    # after a minute: the port is chosen and bound by one starting run at a time on this machine.
    with locked(Path(tempfile.gettempdir()) / f"alsoview-ray-start-{os.getuid()}", "a local Ray instance"):
        for attempt in range(1, START_ATTEMPTS + 1):
            port = DASHBOARD_PORT if port_is_free(DASHBOARD_PORT) else free_port()
            if dashboard:
                # Ray's state API finds the dashboard by scanning for running Ray instances when it
                # is not told, and fails when there are two. Named here, it is inherited by every
                # process this instance starts.
                os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
            try:
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=dashboard,
                    dashboard_host="127.0.0.1",
                    dashboard_port=port,
                )
                break
            except Exception as exc:  # whatever Ray raises: the user gets one line and Ray's log folder
                _shut_down_quietly()
                if attempt == START_ATTEMPTS:
                    raise RunFailedError(
                        f"could not start a local Ray instance ({START_ATTEMPTS} tries): {first_line(exc)}; "
                        f"Ray's logs: {ray_logs_folder()}"
                    ) from None
                log.warning("starting a local Ray instance failed (%s); trying once more", first_line(exc))
    token = (
        "token authentication on" if os.environ.get(AUTH_MODE_ENV, "").lower() == "token" else "no token authentication"
    )
    where = "no dashboard"
    if dashboard:
        moved = "" if port == DASHBOARD_PORT else f" ({DASHBOARD_PORT} is taken)"
        where = f"dashboard http://127.0.0.1:{port}{moved}"
    return f"started a private local Ray instance on 127.0.0.1 ({num_cpus} CPUs, {token}), {where}"


def ray_logs_folder() -> Path:
    """The log folder of the latest Ray session started on this machine (a link Ray keeps)."""
    return ray_internals.ray_temp_dir() / "session_latest" / "logs"


def _shut_down_quietly() -> None:
    """What a failed `ray.init` left running in this process, stopped (best effort)."""
    import ray

    try:
        ray.shutdown()
    except Exception as exc:
        log.debug("ray.shutdown after a failed start: %s", first_line(exc))


def _stay_on_loopback() -> None:
    """Ray's single-machine mode for this process and the Ray processes it starts.

    Ray reads the switch once, at import; by now it is imported, so the module's copy is set
    as well as the environment (which the GCS, raylet and workers inherit). With it, the node's
    address is 127.0.0.1 (no `_node_ip_address` needed) and every listener stays on loopback.

    Ray Train also starts a preemption watcher actor with every run; a Ray on 127.0.0.1 (a
    private instance, or nodes of one machine) has no node a cloud could take back, so its runs
    do without it: one process fewer per run, and none of the warning it logs about its
    constructor arguments. Ray Train passes the switch on to its controller.
    """
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_internals.stay_on_loopback_in_this_process()
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")


def _accepts_connections(host: str, port: int, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def cluster_has_gpus() -> bool:
    """Whether the connected cluster offers any GPU (training and embedding follow it)."""
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def on_this_node() -> Any:
    """A scheduling strategy for an actor that must live on the caller's node, and die with it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
