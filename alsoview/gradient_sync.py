"""Gradient averaging across data-parallel workers that sends the rows a step touched, not whole tables.

Why not DDP: DDP all-reduces every parameter's gradient every step, and this model's parameters
are mostly embedding tables (18 MB at Video Games scale) of which a batch of 512 touches a few
hundred rows. With two workers on one machine that all-reduce made training 7x slower than one
worker, and across machines it crosses the network each step. Sparse gradients through DDP are
no way out: gloo's sparse all-reduce crashed (SIGSEGV) on torch 2.13 CPU, and NCCL has none.

What this does instead, after every ``backward()`` (Ray-free: plain ``torch.distributed``, gloo
or NCCL):

- embedding tables emit row-sparse gradients (``nn.Embedding.sparse``), so each worker knows the
  rows it touched; the workers all-gather (row ids, gradient rows), and every worker sums them per
  row and divides by the number of workers: the same average DDP computes, on every worker;
- a table the optimiser treats as dense (fused Adam, the default) gets that average back as a
  dense gradient, zero outside the touched rows, so dense Adam's semantics are unchanged; a
  table under RowSparseAdam keeps it sparse;
- the other parameters (the MLP: small) are averaged with one all-reduce of a flat buffer,
  started before the rows are exchanged.

Each worker hands the collectives about (rows touched x row width) floats for the tables plus
the MLP's size, instead of every parameter: ``bytes_per_step`` says how many.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class _Table:
    """One embedding table under row exchange."""

    weight: nn.Parameter
    dense_grad: bool  # its optimiser wants a dense gradient (Adam), not a sparse one (RowSparseAdam)
    buffer: torch.Tensor | None = None  # the dense gradient, reused: only last step's rows need zeroing
    last_rows: torch.Tensor | None = None


class RowGradientSync:
    """Averages gradients across the default process group, exchanging only touched embedding rows.

    Build it after the optimiser (which decides, from ``nn.Embedding.sparse``, whether a table's
    update is dense Adam or RowSparseAdam) and call it between ``loss.backward()`` and
    ``optimizer.step()``. Building it broadcasts rank 0's parameters, as DDP does, so every worker
    starts from the same weights.
    """

    def __init__(self, model: nn.Module) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("RowGradientSync needs torch.distributed initialised (a Ray Train worker does that)")
        self.world = dist.get_world_size()
        self.tables: list[_Table] = []
        table_weights: set[int] = set()
        for module in model.modules():
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.weight.requires_grad:
                if module.max_norm is not None or (isinstance(module, nn.EmbeddingBag) and module.mode == "max"):
                    raise ValueError(
                        "row exchange needs sum/mean embeddings without max_norm (their gradients are rows)"
                    )
                self.tables.append(_Table(module.weight, dense_grad=not module.sparse))
                table_weights.add(id(module.weight))
                module.sparse = True  # the backward pass then names the rows it touched
        self.dense_params = [p for p in model.parameters() if p.requires_grad and id(p) not in table_weights]
        if len({t.weight.dtype for t in self.tables}) > 1:
            raise ValueError("row exchange packs every table into one payload: the tables need one dtype")
        self.bytes_per_step = 0  # what this worker handed to the collectives in its last step
        self.bytes_sent = 0  # ... and in all steps so far, with their count: for per-epoch means
        self.steps = 0
        # what a DDP all-reduce of every gradient would hand over each step, for comparison
        self.all_reduce_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor, src=0)

    def __call__(self) -> None:
        """Replace every gradient by its average over all workers."""
        flat = self._flat_dense_grads()
        pending = dist.all_reduce(flat, async_op=True) if flat.numel() else None
        self.bytes_per_step = flat.numel() * flat.element_size()
        if self.tables:
            self._exchange_rows()
        if pending is not None:
            pending.wait()
            self._unflatten_dense_grads(flat.div_(self.world))
        self.bytes_sent += self.bytes_per_step
        self.steps += 1

    # ------------------------------------------------------------------ dense parameters

    def _flat_dense_grads(self) -> torch.Tensor:
        parts = [
            torch.zeros(p.numel(), device=p.device, dtype=p.dtype) if p.grad is None else p.grad.reshape(-1)
            for p in self.dense_params
        ]
        if not parts:
            return torch.zeros(0)
        return torch.cat(parts)

    def _unflatten_dense_grads(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self.dense_params:
            piece = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            if p.grad is None:
                p.grad = piece.clone()
            else:
                p.grad.copy_(piece)

    # ------------------------------------------------------------------ embedding rows

    def _local_rows(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each table's touched rows (sorted, unique) and their gradient rows on this worker."""
        ids, values = [], []
        for table in self.tables:
            grad = table.weight.grad
            if grad is None:  # not used this step on this worker
                ids.append(torch.zeros(0, dtype=torch.long, device=table.weight.device))
                values.append(table.weight.new_zeros((0, table.weight.shape[1])))
            elif grad.is_sparse:
                grad = grad.coalesce()
                ids.append(grad.indices()[0])
                values.append(grad.values())
            else:  # some code path used the table densely (e.g. F.embedding without sparse=True)
                rows = grad.ne(0).any(dim=1).nonzero().squeeze(1)
                ids.append(rows)
                values.append(grad.index_select(0, rows))
        return ids, values

    def _exchange_rows(self) -> None:
        """Two collectives whatever the number of tables: each worker's row counts, then one payload
        per worker with its row ids (int64 bits carried as elements of the tables' dtype) and its
        gradient rows: fewer collectives, since each one waits for every worker (benchmarks/README.md)."""
        ids, values = self._local_rows()
        device, dtype = self.tables[0].weight.device, self.tables[0].weight.dtype
        counts = torch.tensor([len(rows) for rows in ids], dtype=torch.long, device=device)
        all_counts = torch.stack(_all_gather(counts, self.world)).tolist()  # [world][tables]
        id_bits = torch.cat(ids).view(dtype)
        payload = torch.cat([id_bits, *(v.reshape(-1).to(dtype) for v in values)])
        per_id = torch.long.itemsize // dtype.itemsize  # payload elements per row id
        widths = [t.weight.shape[1] for t in self.tables]
        lengths = [sum(c) * per_id + sum(n * w for n, w in zip(c, widths)) for c in all_counts]
        padded = max(lengths)
        gathered = _all_gather(torch.cat([payload, payload.new_zeros(padded - len(payload))]), self.world)
        # what each worker sends, padding included: the collective moves the longest worker's length
        self.bytes_per_step += counts.numel() * counts.element_size() + padded * payload.element_size()
        per_table_ids: list[list[torch.Tensor]] = [[] for _ in self.tables]
        per_table_values: list[list[torch.Tensor]] = [[] for _ in self.tables]
        for rank_counts, received in zip(all_counts, gathered):
            n_ids = sum(rank_counts)
            rank_ids = received[: n_ids * per_id].view(torch.long)
            id_offset, value_offset = 0, n_ids * per_id
            for t, (n, width) in enumerate(zip(rank_counts, widths)):
                per_table_ids[t].append(rank_ids[id_offset : id_offset + n])
                per_table_values[t].append(received[value_offset : value_offset + n * width].view(n, width))
                id_offset += n
                value_offset += n * width
        for t, table in enumerate(self.tables):
            self._set_average(table, torch.cat(per_table_ids[t]), torch.cat(per_table_values[t]))

    def _set_average(self, table: _Table, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Give the table the workers' summed rows divided by the worker count, densely or sparsely."""
        values = values / self.world
        weight = table.weight
        if not table.dense_grad:
            weight.grad = torch.sparse_coo_tensor(rows[None], values, weight.shape).coalesce()
            return
        if table.buffer is None:
            table.buffer = torch.zeros_like(weight)
        elif table.last_rows is not None:
            table.buffer.index_fill_(0, table.last_rows, 0.0)
        table.buffer.index_add_(0, rows, values)
        table.last_rows = rows
        weight.grad = table.buffer


def _all_gather(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Every worker's tensor (all of one shape), each in its own storage."""
    out = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor)
    return out
