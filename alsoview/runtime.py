"""Connecting to Ray: an existing cluster when there is one, else a local, loopback-only one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("alsoview")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Start or join Ray once per process; returns a one-line description of what happened.

    - already initialised (tests, a notebook): reuse it;
    - `address` or RAY_ADDRESS (set for `ray job submit` drivers): connect there;
    - a cluster started on this machine with `ray start`: connect to it;
    - otherwise start a local instance bound to 127.0.0.1 with the dashboard (Tune with
      ASHA needs the dashboard's state API, see the README).
    """
    import ray

    if ray.is_initialized():
        return "using the Ray instance already initialised in this process"
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return f"connected to the Ray cluster at {address}"
    try:
        ray.init(address="auto")
        return "connected to the Ray cluster running on this machine"
    except ConnectionError:
        pass
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        _node_ip_address="127.0.0.1",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
    )
    return f"started a local Ray instance on 127.0.0.1 ({num_cpus or os.cpu_count()} CPUs)"


def cluster_has_gpus() -> bool:
    """Whether the connected cluster offers any GPU (training and embedding follow it)."""
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
