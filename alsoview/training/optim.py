"""Optimisers: Adam (fused) for dense parameters, and a row-sparse Adam for sparse embedding tables.

`build_optimizer` picks them from the model: with `model.sparse_embeddings` the embedding tables
emit row-sparse gradients and only the rows a batch touched move (SparseAdam's update).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from alsoview.model.config import ModelConfig


class RowSparseAdam(torch.optim.Optimizer):
    """``torch.optim.SparseAdam``'s update ("lazy" Adam: only the rows in the gradient move), with
    dense row operations instead of sparse tensors.

    The numbers are SparseAdam's (the tests compare them) and so is the state layout (``step``,
    ``exp_avg``, ``exp_avg_sq``); a step costs less than SparseAdam's on the CPU, where building
    sparse tensors and ``sparse_mask`` dominate for batches of a few hundred rows.
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        if lr <= 0 or eps <= 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid RowSparseAdam settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("RowSparseAdam needs sparse gradients (nn.Embedding(sparse=True)); use Adam")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                self._update_rows(param, param.grad, state, group["lr"], beta1, beta2, group["eps"])
        return loss

    @staticmethod
    def _update_rows(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
    ) -> None:
        grad = grad.coalesce()  # as SparseAdam does: repeated rows summed, rows sorted and unique
        rows, g = grad._indices()[0], grad._values()
        if g.numel() == 0:
            return
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        old_avg, old_sq = exp_avg.index_select(0, rows), exp_avg_sq.index_select(0, rows)
        new_avg = g.sub(old_avg).mul_(1 - beta1).add_(old_avg)
        new_sq = g.pow(2).sub_(old_sq).mul_(1 - beta2).add_(old_sq)
        exp_avg.index_copy_(0, rows, new_avg)
        exp_avg_sq.index_copy_(0, rows, new_sq)
        step = state["step"]
        step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        param.index_add_(0, rows, new_avg.div_(new_sq.sqrt_().add_(eps)).mul_(-step_size))


class MixedOptimizer:
    """RowSparseAdam for sparse embedding weights plus Adam for everything else, behind one object.

    Offers what a training loop and checkpointing use: ``zero_grad``, ``step``, ``state_dict``,
    ``load_state_dict`` and ``param_groups`` (to change the learning rate by hand). It is not a
    ``torch.optim.Optimizer``, so torch LR schedulers cannot wrap it; schedule the groups directly.
    """

    def __init__(self, sparse: torch.optim.Optimizer, dense: torch.optim.Adam | None) -> None:
        self.sparse = sparse
        self.dense = dense

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.sparse, self.dense) if opt is not None]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"sparse": self.sparse.state_dict(), "dense": None if self.dense is None else self.dense.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sparse.load_state_dict(state["sparse"])
        if self.dense is not None:
            self.dense.load_state_dict(state["dense"])


def build_optimizer(model: nn.Module, lr: float, sparse: bool) -> torch.optim.Optimizer | MixedOptimizer:
    """Adam for a dense model; for ``sparse=True`` a :class:`MixedOptimizer` (RowSparseAdam, with
    SparseAdam's update, on sparse embeddings; Adam on the rest).
    Raises ``ValueError`` when
    ``sparse`` does not match the model (plain Adam rejects sparse gradients, SparseAdam dense ones).
    """
    sparse_params = [m.weight for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse]
    sparse_ids = {id(p) for p in sparse_params}
    dense_params = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    if not sparse:
        if sparse_params:
            raise ValueError(
                "the model has sparse embeddings (sparse_embeddings=True): build_optimizer(..., sparse=True)"
            )
        return _adam(dense_params, lr)
    if not sparse_params:
        raise ValueError("sparse=True needs a model built with ModelConfig(sparse_embeddings=True)")
    dense = _adam(dense_params, lr) if dense_params else None
    return MixedOptimizer(RowSparseAdam(sparse_params, lr=lr), dense)


# From about this many rows in the id tables, dense Adam's pass over them is a large share of a
# step, and the share grows with the tables (docs/scaling.md).
DENSE_ROWS_NOTED = 50_000


def dense_adam_note(model_config: ModelConfig, n_users: int, n_items: int) -> str | None:
    """Why an epoch of dense Adam grows faster than the data, for large id tables: every step
    moves every row of the user and item tables (a row's moments decay even without a gradient),
    so a step costs as much as the tables are large and an epoch samples x rows."""
    if model_config.sparse_embeddings:
        return None
    rows = n_items + (n_users if model_config.user.id is not None else 0)
    if rows < DENSE_ROWS_NOTED:
        return None
    return (
        f"model.sparse_embeddings=false (the design's dense Adam) moves all {rows:,} embedding rows at every "
        "step, so an epoch's steps cost samples x rows; model.sparse_embeddings=true moves only a batch's rows "
        "(lazy Adam, docs/scaling.md)"
    )


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass over all parameters instead of foreach's several,
    which dominated a CPU training step of this embedding-heavy model (benchmarks/README.md).

    Same update rule and state as the default implementation.
    """
    return NoSubnormalAdam(params, lr=lr)


class NoSubnormalAdam(torch.optim.Adam):
    """torch's fused Adam whose moments never become subnormal floats: every `CLEAN_EVERY` steps,
    moments smaller than `TINY` are set to 0.

    Why: dense Adam decays the moments of every embedding row a batch did not touch (``exp_avg``
    by 0.9 a step), so after about 800 steps without a touch they fall below 1.2e-38, into
    subnormal floats, on which x86 CPUs compute far slower: at Video Games scale dense epochs got
    slower one after the other (benchmarks/README.md, "Dense Adam on subnormal floats"). The
    CPU's flush-to-zero mode would avoid it, but it is a per-thread flag that torch's already
    started intra-op threads do not get. A moment of TINY or more stays normal for CLEAN_EVERY
    untouched steps (1e-33 x 0.9**100 = 2.7e-38); one below it moves its weight by less than
    ``lr * 1e-33 / eps``, far below the last digit of a float32 weight (the tests compare the
    weights with plain Adam's).
    """

    CLEAN_EVERY = 100
    TINY = 1e-33

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = super().step(closure)
        states = list(self.state.values())
        # the step count is Adam's own, so a run resumed from a checkpoint cleans on the same steps
        if states and int(states[0]["step"]) % self.CLEAN_EVERY == 0:
            for state in states:
                for moment in (state["exp_avg"], state["exp_avg_sq"]):
                    moment.masked_fill_(moment.abs() < self.TINY, 0.0)
        return loss
