"""Gradient averaging across data-parallel workers that sends the rows a step touched, not whole tables.

Why not DDP: DDP all-reduces every parameter's gradient every step, and this model's parameters
are mostly embedding tables of which a batch of 512 touches a few hundred rows. With two workers
on one machine that all-reduce made training several times slower than one worker
(benchmarks/README.md), and across machines it crosses the network each step. Sparse gradients through DDP are
no way out: gloo's sparse all-reduce crashed (SIGSEGV) on torch 2.13 CPU, and NCCL has none.

What this does instead, after every ``backward()`` (Ray-free: plain ``torch.distributed``, gloo
or NCCL):

- embedding tables emit row-sparse gradients (``nn.Embedding.sparse``), so each worker knows the
  rows it touched; the workers all-gather (row ids, gradient rows), and every worker sums them per
  row and divides by the number of workers: the same average DDP computes, on every worker.
  One all-gather a step carries the row counts with the rows, in room for as many rows per
  table as any worker has sent so far; rows beyond it follow in a second all-gather, which
  after the first steps is rare. A collective costs its latency whatever it carries
  (benchmarks/results/worker_step.json), so fewer of them matter as much as fewer bytes;
- a table the optimiser treats as dense (fused Adam, the default) gets that average back as a
  dense gradient, zero outside the touched rows, so dense Adam's semantics are unchanged; a
  table under RowSparseAdam keeps it sparse;
- the other parameters (the MLP: small) are averaged with one all-reduce of a flat buffer,
  started before the rows are exchanged; with two workers they ride in the rows' all-gather
  instead, which moves the same bytes as a ring all-reduce in one collective fewer.

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
        if len({p.dtype for p in model.parameters() if p.requires_grad}) > 1:
            raise ValueError("row exchange packs gradients into shared buffers: the parameters need one dtype")
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        if self.dtype not in _PER_LONG:
            raise ValueError(f"row exchange carries int64 row ids in float buffers; {self.dtype} parameters cannot")
        # In an all-gather each worker receives (world - 1) x the buffer, in a ring all-reduce
        # 2 (world - 1) / world x: the same for two workers, who then save a collective.
        self.dense_in_gather = self.world == 2
        # rows of each table every worker's payload has room for: the most any worker has sent
        self.capacity = [0] * len(self.tables)
        self.second_rounds = 0  # steps on which rows beyond the capacity needed a second all-gather
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
        ids, values = self._local_rows()
        pending, self.bytes_per_step = None, 0
        if not self.dense_in_gather and flat.numel():
            pending = dist.all_reduce(flat, async_op=True)
            self.bytes_per_step = flat.numel() * flat.element_size()
        if self.tables or self.dense_in_gather:
            flat = self._gather(flat, ids, values)
        if pending is not None:
            pending.wait()
        if flat.numel():
            self._unflatten_dense_grads(flat.div_(self.world))
        self.bytes_sent += self.bytes_per_step
        self.steps += 1

    # ------------------------------------------------------------------ dense parameters

    def _flat_dense_grads(self) -> torch.Tensor:
        parts = [
            torch.zeros(p.numel(), device=p.device, dtype=p.dtype) if p.grad is None else p.grad.reshape(-1)
            for p in self.dense_params
        ]
        return torch.cat(parts) if parts else torch.zeros(0, device=self.device, dtype=self.dtype)

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

    def _gather(self, flat: torch.Tensor, ids: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
        """One all-gather of every worker's row counts, its rows up to `capacity` per table (zero
        padded) and, with two workers, its flat MLP gradient; a second one only for rows beyond
        the capacity. Returns the summed flat gradient when it came along, else `flat` as given.

        The capacity is the most rows any worker has sent of each table so far: every worker
        sees the same counts, so they all grow it alike and the payloads keep one length."""
        counts = torch.tensor([len(rows) for rows in ids], dtype=torch.long, device=self.device)
        head = [counts.view(self.dtype), self._pack(ids, values, [0] * len(ids), self.capacity)]
        gathered = _all_gather(torch.cat([*head, flat] if self.dense_in_gather else head), self.world)
        self.bytes_per_step += gathered[0].numel() * gathered[0].element_size()
        n_counts = counts.numel() * _PER_LONG[self.dtype]
        all_counts = torch.stack([received[:n_counts] for received in gathered]).view(torch.long).tolist()
        parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.tables]  # [table][piece]
        for rank_counts, received in zip(all_counts, gathered):
            fitted = [min(n, room) for n, room in zip(rank_counts, self.capacity)]
            for t, piece in enumerate(self._unpack(received[n_counts:], self.capacity, fitted)):
                parts[t].append(piece)
        extra = [max(max(c[t] for c in all_counts) - room, 0) for t, room in enumerate(self.capacity)]
        if any(extra):  # some worker touched more rows than the capacity: they follow in a second round
            self.second_rounds += 1
            overflow = _all_gather(self._pack(ids, values, self.capacity, extra), self.world)
            self.bytes_per_step += overflow[0].numel() * overflow[0].element_size()
            for rank_counts, received in zip(all_counts, overflow):
                beyond = [max(n - room, 0) for n, room in zip(rank_counts, self.capacity)]
                for t, piece in enumerate(self._unpack(received, extra, beyond)):
                    parts[t].append(piece)
        self.capacity = [max(room, *(c[t] for c in all_counts)) for t, room in enumerate(self.capacity)]
        for table, pieces in zip(self.tables, parts):
            self._set_average(table, torch.cat([rows for rows, _ in pieces]), torch.cat([v for _, v in pieces]))
        if not self.dense_in_gather:
            return flat
        return torch.stack([received[len(received) - flat.numel() :] for received in gathered]).sum(dim=0)

    def _pack(
        self, ids: list[torch.Tensor], values: list[torch.Tensor], start: list[int], room: list[int]
    ) -> torch.Tensor:
        """Rows `start[t]` up to `start[t] + room[t]` of each table, zero padded to `room[t]`: all
        the row ids first (int64 bits as elements of the tables' dtype), then the gradient rows."""
        id_parts, row_parts = [], []
        for table, rows, vals, first, n in zip(self.tables, ids, values, start, room):
            rows, vals = rows[first : first + n], vals[first : first + n].to(self.dtype)
            id_parts.append(torch.cat([rows, rows.new_zeros(n - len(rows))]).view(self.dtype))
            row_parts.append(torch.cat([vals, vals.new_zeros((n - len(vals), table.weight.shape[1]))]).reshape(-1))
        return torch.cat([*id_parts, *row_parts]) if id_parts else torch.zeros(0, device=self.device, dtype=self.dtype)

    def _unpack(
        self, received: torch.Tensor, room: list[int], used: list[int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A `_pack` payload of `room` rows per table -> each table's first `used` (ids, rows)."""
        per_id = _PER_LONG[self.dtype]
        id_at, row_at = 0, sum(room) * per_id
        out = []
        for table, n, k in zip(self.tables, room, used):
            width = table.weight.shape[1]
            rows = received[id_at : id_at + n * per_id].view(torch.long)[:k]
            vals = received[row_at : row_at + n * width].view(n, width)[:k]
            out.append((rows, vals))
            id_at += n * per_id
            row_at += n * width
        return out

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


# elements of a floating dtype that carry the bits of one int64 (row ids and counts travel in float buffers)
_PER_LONG = {
    dtype: torch.long.itemsize // dtype.itemsize
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16)
}


def _all_gather(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Every worker's tensor (all of one shape), each in its own storage."""
    out = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor)
    return out
