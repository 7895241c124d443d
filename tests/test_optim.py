"""The optimisers: Adam for dense models, RowSparseAdam (SparseAdam's update, dense row operations)
for sparse embedding tables, and the pair behind one object."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from factories import model_config
from test_model import make_model
from torch import nn

from alsoview.training.optim import DENSE_ROWS_NOTED, RowSparseAdam, build_optimizer, dense_adam_note


def test_dense_optimizer_is_adam_and_rejects_sparse_model() -> None:
    assert isinstance(build_optimizer(make_model(), 1e-3, sparse=False), torch.optim.Adam)
    with pytest.raises(ValueError, match="sparse=True"):
        build_optimizer(make_model(model_config("sparse_embeddings=true")), 1e-3, sparse=False)
    with pytest.raises(ValueError, match="sparse_embeddings=True"):
        build_optimizer(make_model(), 1e-3, sparse=True)


def test_row_sparse_adam_matches_torch_sparse_adam_with_repeated_rows() -> None:
    torch.manual_seed(0)
    ours, theirs = nn.Embedding(50, 4, sparse=True), nn.Embedding(50, 4, sparse=True)
    theirs.load_state_dict(ours.state_dict())
    opt_ours, opt_theirs = (
        RowSparseAdam(ours.parameters(), lr=0.01),
        torch.optim.SparseAdam(theirs.parameters(), lr=0.01),
    )
    for _ in range(25):
        ids = torch.randint(0, 12, (40,))  # many repeats: the duplicate rows' gradients must be summed
        weight = torch.randn(40, 4)
        for emb, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            (emb(ids) * weight).sum().backward()
            opt.step()
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-6, atol=1e-7)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt_ours.state[ours.weight][key], opt_theirs.state[theirs.weight][key])
    assert opt_ours.state[ours.weight]["step"] == 25
    assert torch.equal(ours.weight[12:], theirs.weight[12:])  # rows never in a batch never move


def test_row_sparse_adam_refuses_dense_gradients() -> None:
    layer = nn.Linear(3, 1)
    opt = RowSparseAdam(layer.parameters(), lr=0.1)
    layer(torch.ones(2, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


def _rarely_touched_table(optimizer_type: Any, steps: int = 850) -> tuple[nn.Embedding, torch.Tensor]:
    """Dense Adam on a table whose rows but one are touched only in the first step, as rare ids are:
    their moments decay by 0.9 a step, into subnormal floats after about 800 steps."""
    torch.manual_seed(0)
    table = nn.Embedding(50, 4)
    optimizer = optimizer_type(table)
    for step in range(steps):
        rows = torch.arange(50) if step == 0 else torch.tensor([0])
        optimizer.zero_grad(set_to_none=True)
        table(rows).pow(2).sum().backward()
        optimizer.step()
    return table, optimizer.state[table.weight]["exp_avg"]


def _subnormal(t: torch.Tensor) -> int:
    bits = t.contiguous().view(torch.int32) & 0x7FFFFFFF  # exponent 0, mantissa not
    return int(((bits > 0) & (bits < 0x00800000)).sum())


def test_dense_adam_moments_never_become_subnormal_and_the_weights_are_plain_adams() -> None:
    plain, plain_moments = _rarely_touched_table(lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, fused=True))
    ours, moments = _rarely_touched_table(lambda m: build_optimizer(m, 1e-2, sparse=False))
    assert _subnormal(plain_moments) > 0  # the case is real: plain Adam's moments go subnormal
    assert _subnormal(moments) == 0  # so slow arithmetic never starts
    assert torch.equal(ours.weight, plain.weight)  # what they would have moved is below a float's last digit


def test_large_tables_under_dense_adam_are_noted_with_the_rows_each_step_moves() -> None:
    from alsoview.config import load_config

    design = load_config(None, []).model
    users, items = DENSE_ROWS_NOTED, 17_000
    note = dense_adam_note(design, users, items)
    assert note and f"moves all {users + items:,} embedding rows at every step" in note
    assert "model.sparse_embeddings=true" in note
    assert dense_adam_note(design, 100, DENSE_ROWS_NOTED - 101) is None  # small tables: no note
    assert dense_adam_note(load_config(None, ["model.sparse_embeddings=true"]).model, users, items) is None
    no_user_id = load_config(None, ["model.user.id=false", "model.user.history=true"]).model
    assert dense_adam_note(no_user_id, users, items) is None  # only the item table: 17,000 rows
