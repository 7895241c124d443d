"""One Ray node on 127.0.0.1, as a process of its own: the head, or a node joining a head.

`ray start` refuses to add a node to a head in Ray's single-machine mode (the switch that keeps
every listener on loopback), and without that mode Ray rewrites 127.0.0.1 to this machine's
network address. Ray's own test cluster (`ray.cluster_utils.Cluster`) starts nodes through
`ray._private.node.Node` instead; this does the same, one node per process, so a test can lose
a node by killing this process and everything below it (a pre-empted machine), or start a node
inside a mount namespace of its own (a machine with its own disks).

    python tests/ray_node.py --num-cpus 1 --temp-dir D [--gcs 127.0.0.1:PORT]

Prints one JSON line (the node's GCS address, dashboard and node id) once the node is up, then
waits; SIGTERM stops the node's processes, SIGKILL of the whole tree loses it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read once, when Ray is imported


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gcs", help="the head's GCS address; without it this node is the head")
    parser.add_argument("--num-cpus", type=float, required=True)
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--object-store-mb", type=int, default=150)
    args = parser.parse_args()

    from ray._private.node import Node
    from ray._private.parameter import RayParams

    params = dict(
        node_ip_address="127.0.0.1",
        num_cpus=args.num_cpus,
        num_gpus=0,
        object_store_memory=args.object_store_mb * 1024 * 1024,
        min_worker_port=0,
        max_worker_port=0,
        temp_dir=args.temp_dir,
    )
    if args.gcs is None:
        params.update(
            gcs_server_port=_free_port(),
            include_dashboard=True,  # Tune with ASHA needs the state API
            dashboard_host="127.0.0.1",
            dashboard_port=_free_port(),
            dashboard_agent_listen_port=_free_port(),
            ray_client_server_port=_free_port(),
        )
    else:
        params.update(gcs_address=args.gcs, include_log_monitor=False, node_manager_port=0)
    ray_params = RayParams(**params)
    node = Node(ray_params, head=args.gcs is None, shutdown_at_exit=False, spawn_reaper=False)

    def stop(*_: object) -> None:
        node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(
        json.dumps({"gcs": node.gcs_address, "dashboard": node.webui_url, "node_id": node.node_id}),
        flush=True,
    )
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
