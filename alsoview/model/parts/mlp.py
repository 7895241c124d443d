"""`model.heads.mlp`, the original design's head: [user, item, brand, price, missing flag,
projected description (, user * item)] -> Dense(128) -> ReLU -> dropout -> Dense(64) -> ReLU ->
dropout -> Dense(1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alsoview.errors import check_setting
from alsoview.model.part import Part, PartInputs, Users
from alsoview.model.towers import ItemTower

# The hidden layer's elements in one block of all-items scoring (4 MiB of float32): within a
# CPU's L2 + L3, so the layers after the first read it from cache (docs/scaling.md).
HIDDEN_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class MLPConfig(Part):
    """The design's MLP over the concatenated user vector and item parts."""

    scores_every_item = False  # every (user, item) pair through the MLP: too slow to train on

    hidden_dims: tuple[int, ...] = (128, 64)  # the hidden layers' widths, in order
    dropout: float = 0.5  # after each hidden layer
    text_projection_dim: int = 64  # the description vector goes through Linear(text_dim, this)
    # Also feed user * item (elementwise), as NeuMF's GMF branch does: an MLP over a plain
    # concatenation learns user-item interactions slowly.
    product_interaction: bool = False
    item_features: bool = True  # brand, price and description vector in the input (false: the two embeddings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))  # YAML gives lists

    def validate(self, where: str) -> None:
        # a layer's weights are the product of two sizes: beyond 65,536 a typo, not a model
        ok = len(self.hidden_dims) >= 1 and all(1 <= h <= 65_536 for h in self.hidden_dims)
        check_setting(ok, f"{where}.hidden_dims", "a non-empty list of sizes in [1, 65536]", list(self.hidden_dims))
        check_setting(0.0 <= self.dropout < 1.0, f"{where}.dropout", "in [0, 1)", self.dropout)
        check_setting(
            1 <= self.text_projection_dim <= 65_536,
            f"{where}.text_projection_dim",
            "in [1, 65536]",
            self.text_projection_dim,
        )

    def build(self, inputs: PartInputs) -> "MLPHead":
        with_text = self.item_features and inputs.text_dim > 0
        projection = nn.Linear(inputs.text_dim, self.text_projection_dim) if with_text else None
        head = MLPHead(inputs.dim, nn.Sequential(), projection, self.item_features, self.product_interaction)
        width = inputs.dim + head.item_width() + (inputs.dim if self.product_interaction else 0)
        head.layers = mlp_layers(width, self.hidden_dims, self.dropout)
        return head


class MLPHead(nn.Module):
    """`item_features` false leaves brand, price and text out of its input (to measure what they
    add); `product` adds user * item inside the MLP."""

    def __init__(
        self, dim: int, layers: nn.Sequential, text_projection: nn.Linear | None, item_features: bool, product: bool
    ) -> None:
        super().__init__()
        self.dim, self.item_features, self.product = dim, item_features, product
        self.text_projection = text_projection if item_features else None
        self.layers = layers

    def item_width(self) -> int:
        """Width of an item's part of the input: its embedding, then brand, price pair and text."""
        if not self.item_features:
            return self.dim
        return 2 * self.dim + 2 + (self.text_projection.out_features if self.text_projection is not None else 0)

    def _item_side(self, tower: ItemTower, items: torch.Tensor, item: torch.Tensor) -> list[torch.Tensor]:
        if not self.item_features:
            return [item]
        parts = [item, tower.brand(items), tower.features.price_pair(items)]
        if self.text_projection is not None:
            parts.append(self.text_projection(tower.features.texts(items)))
        return parts

    def score(self, users: Users, items: torch.Tensor, tower: ItemTower) -> torch.Tensor:
        """Logits [B] of (user vector, item) pairs."""
        user, item = users.vector, tower.ids(items)
        parts = [user, *self._item_side(tower, items, item)]
        if self.product:
            parts.append(user * item)
        return self.layers(torch.cat(parts, dim=-1)).squeeze(-1)

    @torch.no_grad()
    def score_all(self, users: Users, tower: ItemTower, elements_per_chunk: int = 1 << 23) -> torch.Tensor:
        """Logits [B, n_items], as `score` in eval mode gives them (to float rounding): the first
        layer is linear in its concatenated input, so its user part is computed once per user and
        its item part once per item; only the addition and the rest of the MLP run per pair."""
        user, items = users.vector, tower.every_item()
        weight = tower.id_embedding.weight
        first, rest = self.layers[0], self.layers[1:]
        d, width = self.dim, self.item_width()
        item_part = torch.cat(self._item_side(tower, items, weight), dim=-1) @ first.weight[:, d : d + width].T
        item_part = item_part + first.bias  # [N, H]
        user_part = user @ first.weight[:, :d].T  # [B, H]
        product_weight = first.weight[:, d + width :] if self.product else None
        scores = torch.empty(len(user), tower.n_items, device=weight.device, dtype=weight.dtype)
        # Blocks of users x items whose hidden layer fits the CPU's cache: one user's row of every
        # item outgrows it as the catalog grows, and each layer then streams from memory.
        block = min(elements_per_chunk, HIDDEN_BLOCK_ELEMENTS) // first.out_features
        users_per_block = max(1, block // max(1, tower.n_items))
        items_per_block = tower.n_items if users_per_block > 1 else max(1, block)
        was_training = self.training
        self.eval()  # dropout off
        for start in range(0, len(user), users_per_block):
            stop = start + users_per_block
            for low in range(0, tower.n_items, items_per_block):
                high = low + items_per_block
                hidden = user_part[start:stop, None, :] + item_part[None, low:high]
                if product_weight is not None:
                    hidden = hidden + (user[start:stop, None, :] * weight[None, low:high]) @ product_weight.T
                scores[start:stop, low:high] = rest(hidden).squeeze(-1)
        self.train(was_training)
        return scores


class FastDropout(nn.Module):
    """Inverted dropout with the same distribution as ``nn.Dropout``, at about half its CPU cost.

    On the CPU, ``torch.nn.functional.dropout`` draws one Bernoulli per element through a slow
    path that costs more than the layer's matmul (benchmarks/README.md, "Findings").
    Here each element gets 16 random bits from one 64-bit draw per four elements, and is kept
    when those bits are at or above ``p`` quantised to 1/65536; the kept values are scaled by the
    exact keep rate of that quantised ``p`` (unbiased). Seeded by torch's generator like
    ``nn.Dropout``. On other devices, and in eval mode, it is ``nn.functional.dropout``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._dropped_levels = round(p * 65536)  # of 65536 equally likely 16-bit values
        self._scale = 65536 / (65536 - self._dropped_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self._dropped_levels == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        bits = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
        keep = (bits >= self._dropped_levels - 32768).to(x.dtype).mul_(self._scale)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def mlp_layers(width: int, hidden_dims: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.ReLU(), FastDropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)
