"""Row-exchange gradient sync: N workers at global batch B train the same weights as 1 worker at B.

Two real processes on gloo (loopback only), without Ray: each takes half of every batch and
averages gradients through `RowGradientSync`; the weights after a few steps must equal those of
one process taking the whole batches, for dense Adam and for the sparse variant.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from factories import catalog_from, model_config

from alsoview.model import ModelConfig, TowerModel, build_model
from alsoview.training.gradient_sync import RowGradientSync
from alsoview.training.losses import binary_cross_entropy
from alsoview.training.optim import build_optimizer
from alsoview.training.trainer import take_steps

N_USERS, N_ITEMS, N_BRANDS, TEXT_DIM = 40, 60, 5, 8
GLOBAL_BATCH, STEPS, WORLD = 32, 4, 2
HISTORY_INDPTR = np.arange(0, 2 * N_USERS + 1, 2)
HISTORY_ITEMS = np.arange(2 * N_USERS) % (N_ITEMS - 1) + 1

CONFIGS = {
    "dense Adam (the default)": model_config("heads.mlp.dropout=0.0"),
    # Adam's update hardly changes when every gradient is scaled: SGD checks the average's scale.
    "dense SGD": model_config("heads.mlp.dropout=0.0"),
    "sparse SGD": model_config("heads.mlp.dropout=0.0", "sparse_embeddings=true"),
    "sparse RowSparseAdam": model_config("heads.mlp.dropout=0.0", "sparse_embeddings=true"),
    "dot product + history bag, dense": model_config("heads.mlp.dropout=0.0", "heads.dot=true", "user.history=true"),
    "dot product + history bag, sparse": model_config(
        "heads.mlp.dropout=0.0", "heads.dot=true", "user.history=true", "sparse_embeddings=true"
    ),
}


def _model(config: ModelConfig) -> TowerModel:
    return build_model(catalog_from(HISTORY_INDPTR, HISTORY_ITEMS, N_ITEMS, N_BRANDS, TEXT_DIM), config, seed=0)


def _batches(rank: int, world: int) -> list[dict[str, torch.Tensor]]:
    """The global batches (the same in every process), each cut into this rank's contiguous share."""
    gen = torch.Generator().manual_seed(7)
    share = GLOBAL_BATCH // world
    out = []
    for _ in range(STEPS):
        users = torch.randint(1, N_USERS, (GLOBAL_BATCH,), generator=gen)
        items = torch.randint(1, N_ITEMS, (GLOBAL_BATCH,), generator=gen)
        labels = torch.randint(0, 2, (GLOBAL_BATCH,), generator=gen).float()
        part = slice(rank * share, (rank + 1) * share)
        out.append({"user": users[part], "item": items[part], "label": labels[part]})
    return out


# How the MLP's gradient travels: in the counts' all-gather (what two workers do) or in its own
# all-reduce (what more workers do; forced here on two).
DENSE_PATHS = {"all-gather": True, "all-reduce": False}


def _train(
    name: str, rank: int, world: int, dense_path: str = "all-gather"
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    config = CONFIGS[name]
    model = _model(config)
    if name.endswith("SGD"):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    else:
        optimizer = build_optimizer(model, 0.01, config.sparse_embeddings)
    sync = RowGradientSync(model) if world > 1 else None
    if sync is not None:
        sync.dense_in_gather = DENSE_PATHS[dense_path]
    take_steps(model, optimizer, iter(_batches(rank, world)), STEPS, binary_cross_entropy, sync)
    if sync is None:
        return model.state_dict(), {"bytes": 0, "second_rounds": 0}
    return model.state_dict(), {"bytes": sync.bytes_per_step, "second_rounds": sync.second_rounds}


def _worker(rank: int, store: str, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's pairs on loopback, whatever the host name resolves to
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        for index, name in enumerate(CONFIGS):
            for path in DENSE_PATHS:
                state, sync = _train(name, rank, WORLD, path)
                torch.save({"state": state, **sync}, Path(out_dir) / f"config{index}-{path}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_worker_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every config trained by two processes (one spawn: starting them costs more than training)."""
    out = tmp_path_factory.mktemp("two_workers")
    mp.spawn(_worker, args=(str(out / "store"), str(out)), nprocs=WORLD, join=True)
    return out


@pytest.mark.parametrize("dense_path", list(DENSE_PATHS))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_two_workers_train_the_weights_of_one_worker_at_the_same_global_batch(
    config_name: str, dense_path: str, two_worker_runs: Path
) -> None:
    single, _ = _train(config_name, rank=0, world=1)
    index = list(CONFIGS).index(config_name)
    ranks = [torch.load(two_worker_runs / f"config{index}-{dense_path}-rank{r}.pt") for r in range(WORLD)]
    initial = dict(_model(CONFIGS[config_name]).named_parameters())
    for name, expected in single.items():
        if name in initial:
            assert not torch.equal(expected, initial[name]), f"{name} did not train: the test would prove nothing"
        for r, saved in enumerate(ranks):
            torch.testing.assert_close(saved["state"][name], expected, rtol=1e-4, atol=1e-5, msg=f"rank {r}: {name}")
    # Each worker sends the MLP's gradient plus only the table rows its 16 rows touched.
    tables = {n for n in initial if n.endswith(("embedding.weight", "item_bias.weight"))}
    mlp_bytes = sum(p.numel() * 4 for n, p in initial.items() if n not in tables)
    table_bytes = sum(initial[n].numel() * 4 for n in tables)
    assert 0 < ranks[0]["bytes"] - mlp_bytes < table_bytes / 2
    # The first step finds no room (capacity 0) and sends its rows in the second round; later
    # steps mostly fit: both ways of carrying rows are part of the equality above.
    assert all(1 <= saved["second_rounds"] < STEPS for saved in ranks)


def test_sync_refuses_to_run_without_a_process_group() -> None:
    with pytest.raises(RuntimeError, match="torch.distributed"):
        RowGradientSync(_model(CONFIGS["dense Adam (the default)"]))
