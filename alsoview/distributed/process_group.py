"""The training workers' torch process group, with every listener on the Ray node's own address.

Ray Train's default set-up (`TorchConfig(init_method="env")`) has rank 0 start torch's
`TCPStore` for the rendezvous, and the store listens on every interface (`*:<port>`), with no
authentication, whatever `MASTER_ADDR` says (`TCPStore("127.0.0.1", 0, 1, True)` listens on
`*`). Here rank 0 binds the store's socket to its Ray node address itself and hands it to the
store (`master_listen_fd`), and gloo's connections listen on the interface that carries each
worker's node address (`GLOO_SOCKET_IFNAME`, unless the user set it). On a single machine the
node address is 127.0.0.1 (runtime.py), so nothing listens beyond loopback; on a cluster the
ports stay on the cluster's network (docs/cluster.md says which).

`NodeAddressTorchConfig` goes to `TorchTrainer(torch_config=...)`. Its backend is built on Ray
Train's public backend interface (`ray.train.backend.Backend`, a DeveloperAPI that may change in
a minor Ray release) and does what Ray Train's own torch backend does around the process group:
the torch environment variables each worker reads, the group destroyed and CUDA's cache emptied
at the end.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import ray
import torch
import torch.distributed as dist
from ray.train.backend import Backend
from ray.train.torch import TorchConfig

log = logging.getLogger("alsoview")

# Rank 0's store server, kept alive as long as the process group uses it.
_SERVER: dict[str, Any] = {}


def _serve_store(address: str, world_size: int, timeout_s: float) -> int:
    """Rank 0: a TCPStore server whose socket listens on `address` only; returns its port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((address, 0))
        listener.listen()
        port = listener.getsockname()[1]
        fd = listener.detach()  # the store's server owns the socket from here, and closes it
    store = dist.TCPStore(
        address,
        port,
        world_size,
        is_master=True,
        timeout=timedelta(seconds=timeout_s),
        wait_for_workers=False,
        master_listen_fd=fd,
    )
    _SERVER["store"] = store
    return int(store.port)


def interface_of(address: str) -> str | None:
    """The network interface that carries `address` on this machine (None: none does)."""
    import psutil  # a Ray dependency

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == address for a in addresses):
            return name
    return None


def _join(address: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
    """Every rank: gloo on this node's own address, then the process group over rank 0's store."""
    if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ:
        interface = interface_of(ray.util.get_node_ip_address())
        if interface is not None:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
    timeout = timedelta(seconds=timeout_s)
    store = _SERVER["store"] if rank == 0 else dist.TCPStore(address, port, world_size, False, timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def _close_store() -> None:
    _SERVER.pop("store", None)  # its server stops and closes the socket


def _set_torch_env() -> None:
    """The variables torchrun sets, which libraries read (as Ray Train sets them for its workers)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    os.environ["LOCAL_RANK"] = str(context.get_local_rank())
    os.environ["LOCAL_WORLD_SIZE"] = str(context.get_local_world_size())
    os.environ["NODE_RANK"] = str(context.get_node_rank())
    os.environ["RANK"] = str(context.get_world_rank())
    os.environ["WORLD_SIZE"] = str(context.get_world_size())
    os.environ["ACCELERATE_TORCH_DEVICE"] = str(ray.train.torch.get_device())  # Hugging Face Accelerate


def _leave(destroy_group: bool) -> None:
    """Every rank at the end: the process group destroyed (several workers), CUDA's cache emptied."""
    if destroy_group and dist.is_initialized():
        dist.destroy_process_group()
    if torch.cuda.is_available():
        import ray.train.torch

        for device in ray.train.torch.get_devices():
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.empty_cache()


SHUTDOWN_SECONDS = 30.0  # Ray Train's own torch backend waits as long for its workers to leave


class _NodeAddressBackend(Backend):
    """A torch backend whose process group is started by `_join` over `_serve_store`."""

    share_cuda_visible_devices = True  # as Ray Train's torch backend: a node's GPUs seen by its workers

    def on_start(self, worker_group: Any, backend_config: TorchConfig) -> None:
        gpus = worker_group.get_resources_per_worker().get("GPU", 0)
        backend = backend_config.backend or ("nccl" if gpus > 0 else "gloo")
        world, timeout = len(worker_group), backend_config.timeout_s
        address = worker_group.execute_single(0, ray.util.get_node_ip_address)
        port = worker_group.execute_single(0, _serve_store, address, world, timeout)

        def set_master(addr: str, port: int) -> None:  # as Ray Train does, for libraries that read them
            os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)

        worker_group.execute(set_master, addr=address, port=port)
        worker_group.execute(_set_torch_env)
        ray.get(
            [
                worker_group.execute_single_async(rank, _join, address, port, rank, world, backend, timeout)
                for rank in range(world)
            ]
        )

    def on_shutdown(self, worker_group: Any, backend_config: TorchConfig) -> None:
        leaving = worker_group.execute_async(_leave, destroy_group=len(worker_group) > 1)
        try:
            ray.get(leaving, timeout=SHUTDOWN_SECONDS)
        except ray.exceptions.GetTimeoutError:
            log.warning("the workers' torch process group did not shut down within %.0f s", SHUTDOWN_SECONDS)
        worker_group.execute_single(0, _close_store)


@dataclass
class NodeAddressTorchConfig(TorchConfig):
    """`TorchConfig` whose process group listens on the Ray node's address only (module docstring)."""

    @property
    def backend_cls(self) -> type:
        return _NodeAddressBackend
