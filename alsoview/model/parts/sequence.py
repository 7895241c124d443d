"""`model.user.sequence`: a user described by their most recent training items in time order
(SASRec, Kang & McAuley 2018): the last `length` items, each an embedding plus the embedding of how many steps back it
lies, through self-attention blocks; the user vector is the output at the most recent item.

A pooled history (`history.HistoryBag`) forgets order, and on review data the next item follows
the last few more than the first few. While training, a positive is described only by the items
its user had *before* it (earlier in the time order of the training split; equal timestamps in
item-id order), so no later item can leak into its input; its negatives meet the same user (the
scoring is per group of a positive and its negatives, `TowerModel.score_groups`). Scoring outside
training (validation, test, recommendations) uses each user's last `length` training items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from alsoview.errors import check_setting
from alsoview.model.ids import ends_before, init_embedding, time_order_keys, user_item_csr_tensors
from alsoview.model.part import Part, PartInputs
from alsoview.model.visitors import with_buffers

if TYPE_CHECKING:
    from alsoview.data.catalog import Catalog


@dataclass(frozen=True)
class SequenceConfig(Part):
    """The user's last `length` training items through `blocks` self-attention blocks. A training
    positive sees only its user's earlier items, so batches hold whole groups."""

    needs_groups = True

    length: int = 20  # the user's last items the encoder reads
    blocks: int = 1  # self-attention blocks
    dropout: float = 0.2  # inside the blocks

    def validate(self, where: str) -> None:
        # each training pair attends over `length` items, through `blocks` transformer layers
        check_setting(1 <= self.length <= 10_000, f"{where}.length", "in [1, 10000]", self.length)
        check_setting(1 <= self.blocks <= 64, f"{where}.blocks", "in [1, 64]", self.blocks)
        check_setting(0.0 <= self.dropout < 1.0, f"{where}.dropout", "in [0, 1)", self.dropout)

    def build(self, inputs: PartInputs) -> "SequenceEncoder":
        embedding, positions = (
            nn.Embedding(inputs.n_items, inputs.dim, sparse=inputs.sparse),
            nn.Embedding(self.length, inputs.dim),
        )
        init_embedding(embedding)
        std = embedding.weight[1:].std().item() if inputs.n_items > 2 else 0.01
        nn.init.normal_(positions.weight, std=std)
        blocks = sequence_blocks(inputs.dim, self.blocks, self.dropout)
        return SequenceEncoder(embedding, positions, blocks, inputs.n_users, *inputs.catalog.train_sequence)


class SequenceEncoder(nn.Module):
    """The sequence part of a user vector. Each user's training items in time order are CSR
    buffers (not saved with the weights: rebuilt from the dataset, as the history bag's)."""

    def __init__(
        self,
        embedding: nn.Embedding,
        positions: nn.Embedding,
        blocks: nn.ModuleList,
        n_users: int,
        indptr: np.ndarray,
        items_in_time_order: np.ndarray,
    ) -> None:
        super().__init__()
        self.embedding, self.positions, self.blocks = embedding, positions, blocks
        self.n_users, self.n_items = n_users, embedding.num_embeddings
        self.length = positions.num_embeddings
        indptr, items, owners = user_item_csr_tensors(
            indptr, items_in_time_order, n_users, self.n_items, "user_sequence", 1
        )
        keys, key_index = time_order_keys(owners, items, self.n_items, "user_sequence")
        self.register_buffer("indptr", indptr, persistent=False)
        self.register_buffer("items", items, persistent=False)
        self.register_buffer("keys", keys, persistent=False)  # sorted user * n_items + item
        self.register_buffer("key_index", key_index, persistent=False)  # each key's index into `items`

    def for_users(self, catalog: "Catalog") -> "SequenceEncoder":
        """This encoder over `catalog`'s users (visitors: `model.visitors`), its weights shared."""
        indptr, items, owners = user_item_csr_tensors(
            *catalog.train_sequence, catalog.n_users, self.n_items, "user_sequence", 1
        )
        keys, key_index = time_order_keys(owners, items, self.n_items, "user_sequence")
        encoder = with_buffers(self, indptr=indptr, items=items, keys=keys, key_index=key_index)
        encoder.n_users = catalog.n_users
        return encoder

    def window_end(self, users: torch.Tensor, leave_out: torch.Tensor | None) -> torch.Tensor:
        """[B] the end (exclusive, an index into `items`) of each user's window: the user's
        `leave_out` item where the user has it (only earlier items precede it), else the end of
        the user's training items."""
        return ends_before(self.indptr, self.keys, self.key_index, self.n_items, users, leave_out)

    def window(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, length] item ids of each user's window, the most recent last, 0 where it is shorter."""
        end = self.window_end(users, leave_out)
        start = torch.maximum(self.indptr.index_select(0, users), end - self.length)
        index = end[:, None] + torch.arange(-self.length, 0, device=users.device)[None]
        valid = index >= start[:, None]
        if len(self.items) == 0:
            return torch.zeros_like(index)
        return torch.where(valid, self.items[index.clamp(min=0)], torch.zeros_like(index))

    def forward(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, d]: the blocks' output at each window's most recent item; zeros for a user with
        no earlier item."""
        window = self.window(users, leave_out)
        valid = window > 0
        steps_back = torch.arange(self.length - 1, -1, -1, device=users.device)
        x = (self.embedding(window) + self.positions(steps_back)[None]) * valid[..., None]
        empty = ~valid[:, -1]  # windows are right-aligned: an empty one has no last item
        padding = ~valid
        padding[:, -1] = False  # attention over no key at all is undefined; the row is zeroed below
        for block in self.blocks:
            x = block(x, src_key_padding_mask=padding)
        return x[:, -1] * (~empty)[:, None].to(x.dtype)


class AttentionBlock(nn.Module):
    """One SASRec block, pre-norm: x + attention(norm(x)), then x + feed-forward(norm(x)); one
    head, padded positions masked as keys. Written out (not `nn.TransformerEncoderLayer`, whose
    inference fast path packs padded batches and rounds differently with the batch's make-up, so
    a user's vector would depend on who else is in the batch)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm, self.feed_forward_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.query_key_value = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src_key_padding_mask: torch.Tensor) -> torch.Tensor:
        query, key, value = self.query_key_value(self.attention_norm(x)).chunk(3, dim=-1)
        weights = (query @ key.transpose(1, 2)) * query.shape[-1] ** -0.5
        weights = weights.masked_fill(src_key_padding_mask[:, None, :], float("-inf")).softmax(-1)
        x = x + self.dropout(self.attention_out(self.dropout(weights) @ value))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


def sequence_blocks(dim: int, n_blocks: int, dropout: float) -> nn.ModuleList:
    """SASRec's blocks (`AttentionBlock`)."""
    return nn.ModuleList(AttentionBlock(dim, dropout) for _ in range(n_blocks))
