"""Visitors described by their items: a trained model scoring item lists instead of known users.

A store's visitors are mostly not in the training data, but a session holds a few games. Every
user part and head that reads a user's items (the history bag, the sequence, the co-occurrence
and relation heads) reads them from per-user tables built from the catalog's interactions; the
weights and every item-side table stay as trained. `for_visitors` gives a view of the model
whose per-user tables describe the visitors instead (visitor v is user id v + 1; id 0 stays the
unknown user), sharing every weight with the trained model: nothing is copied but the visitors'
own small tables. A part that needs a per-user id (`model.user.id`) has nothing to read for a
visitor: the view leaves it out and says so (`VisitorModel.left_out`), and a model whose user
side is that id alone cannot describe a visitor at all (`VisitorModel.model` is None).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from alsoview.data.catalog import Catalog
    from alsoview.model.scorer import TowerModel


@dataclass(frozen=True)
class VisitorModel:
    """The model's view of the visitors (None: its user side is a per-user id alone), and the
    user parts it left out because a visitor has no id."""

    model: "TowerModel | None"
    left_out: tuple[str, ...]


def visitor_catalog(catalog: "Catalog", item_lists: Sequence[np.ndarray]) -> "Catalog":
    """The catalog with the visitors as its only users (visitor v is user v + 1), each visitor's
    items in the given order as their time order; an item listed twice counts once, at its last
    place (training data holds each (user, item) once)."""
    from alsoview.data.catalog import Interactions

    users, items, times = [], [], []
    for visitor, listed in enumerate(item_lists, start=1):
        listed = np.asarray(listed, dtype=np.int64)
        _, last_from_end = np.unique(listed[::-1], return_index=True)
        kept = np.sort(len(listed) - 1 - last_from_end)  # each item's last place, in order
        users.append(np.full(len(kept), visitor, dtype=np.int64))
        items.append(listed[kept])
        times.append(np.arange(len(kept), dtype=np.int64))
    empty = np.zeros(0, dtype=np.int64)
    train = Interactions(
        np.concatenate(users) if users else empty,
        np.concatenate(items) if items else empty,
        np.concatenate(times) if times else empty,
    )
    return dataclasses.replace(catalog, n_users=len(item_lists) + 1, train=train)


def for_visitors(model: "TowerModel", catalog: "Catalog", item_lists: Sequence[np.ndarray]) -> VisitorModel:
    """The model's view of these visitors (module docstring): `catalog` is the model's own (its
    items and item graphs); the visitors' tables come from `item_lists` of item ids."""
    visitors = visitor_catalog(catalog, item_lists)
    parts, left_out = {}, []
    for name, part in model.user_tower.parts.items():
        rebound = _rebound(part, visitors)
        if rebound is None:
            left_out.append(name)
        else:
            parts[name] = rebound
    if not parts:
        return VisitorModel(None, tuple(left_out))
    heads = {name: _rebound(head, visitors) for name, head in model.heads.items()}
    tower = with_modules(model.user_tower, parts=nn.ModuleDict(parts))
    tower.n_users = visitors.n_users
    view = with_modules(model, user_tower=tower, heads=nn.ModuleDict(heads))
    view.n_users = visitors.n_users
    return VisitorModel(view.eval(), tuple(left_out))


def _rebound(module: nn.Module, visitors: "Catalog") -> nn.Module | None:
    """A part over the visitors: its own `for_users`, or itself when it reads no user's items
    (the dot and MLP heads read only the user vector)."""
    return module.for_users(visitors) if hasattr(module, "for_users") else module


def with_buffers(module: nn.Module, **buffers: torch.Tensor) -> nn.Module:
    """A shallow copy of `module` sharing its parameters and submodules, with these buffers
    replaced (each moved to the device of the buffer it replaces)."""
    new = copy.copy(module)
    new._buffers = dict(module._buffers)
    for name, value in buffers.items():
        old = module._buffers[name]
        new._buffers[name] = value.to(old.device) if old is not None else value
    return new


def with_modules(module: nn.Module, **modules: nn.Module) -> nn.Module:
    """A shallow copy of `module` sharing its parameters and buffers, with these submodules replaced."""
    new = copy.copy(module)
    new._modules = {**module._modules, **modules}
    return new
