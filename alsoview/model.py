"""The recommender: user, item and brand embeddings plus item side features, through an MLP, to a logit.

Item features (brand, price, description vector) live in registered buffers and are looked up by
item id inside the model, so batches carry only ``user`` and ``item`` ids, the features move to the
GPU with ``model.to(device)`` and they travel in ``state_dict`` with the weights.

Unknown ids: id 0 is the reserved "unknown" row of every vocabulary and works like any other row
(its embedding starts at zero, a neutral input, and stays trainable). Ids outside ``[0, vocab)``
are NOT remapped silently by ``forward``: callers that may see new ids (serving, evaluation on
other data) map them with :func:`to_known_ids` first. In eval mode ``forward`` checks the range
and raises a ``ValueError`` instead of an opaque CUDA device-side assert; in training mode it
skips the check (it costs a device sync, and the training pipeline only produces known ids).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from alsoview.config import ModelConfig  # validated with the rest of the run config

if TYPE_CHECKING:
    from alsoview.catalog import Catalog
    from alsoview.config import Config

__all__ = [
    "ModelConfig",
    "AlsoViewMLP",
    "build_model",
    "FastDropout",
    "RowSparseAdam",
    "MixedOptimizer",
    "build_optimizer",
    "count_parameters",
    "to_known_ids",
]

# Embedding rows start small (like Keras' uniform(-0.05, 0.05)); N(0, 1) rows would dwarf the
# scalar price features in the first layer.
_EMBEDDING_INIT_STD = 0.05


def to_known_ids(ids: torch.Tensor | np.ndarray, vocab_size: int) -> torch.Tensor | np.ndarray:
    """Map ids outside ``[0, vocab_size)`` to 0 ("unknown"); use before inference on unseen ids."""
    if isinstance(ids, torch.Tensor):
        return torch.where((ids >= 0) & (ids < vocab_size), ids, torch.zeros_like(ids))
    ids = np.asarray(ids)
    return np.where((ids >= 0) & (ids < vocab_size), ids, 0).astype(ids.dtype, copy=False)


class AlsoViewMLP(nn.Module):
    """user, item, brand embeddings + normalised price (+ missing flag) + projected description vector
    -> concat -> MLP -> logit.

    With the defaults this is the original design, exactly. Three switches (``ModelConfig``) add
    what learning users' tastes from a handful of interactions needs (README, "Quality on real data"):
    - ``user_history``: the user vector adds the sum of "history" embeddings of the user's
      training items scaled by 1/sqrt(count) (FISM, SVD++): a user with five interactions is
      described by those items, whose embeddings every other user of them also trains. While
      training, the scored item itself is left out of its user's history, or the model would
      learn to find an item in its own input.
    - ``dot_product``: the logit adds user . item + an item bias (the GMF branch of NeuMF); with
      ``item_features`` the item's side adds its brand and description (see ``item_vector``). A
      dot product models user-item affinity directly, which an MLP over a concatenation learns
      slowly and poorly (Rendle et al. 2020, "Neural Collaborative Filtering vs. Matrix
      Factorization Revisited").
    - ``mlp``: false drops the MLP over the concatenation, leaving the dot product.
    - ``user_id``: false drops the per-user embedding, so users are described by their history
      alone (with ``user_history``): nothing per user to overfit, and a user's vector follows
      their items.
    - ``item_features``: false leaves brand, price and description out of the MLP's input and
      the dot product (to measure what they add).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_brands: int,
        text_dim: int,
        item_brand: torch.Tensor,
        item_price: torch.Tensor,
        item_price_missing: torch.Tensor,
        item_text: torch.Tensor | None,
        config: ModelConfig = ModelConfig(),
        user_history: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        if min(n_users, n_items, n_brands) < 1 or text_dim < 0:
            raise ValueError("vocabulary sizes must be >= 1 (id 0 is reserved) and text_dim >= 0")
        self.n_users, self.n_items, self.n_brands, self.text_dim = n_users, n_items, n_brands, text_dim
        self.config = config
        self._register_item_features(item_brand, item_price, item_price_missing, item_text)

        d, sparse = config.embedding_dim, config.sparse_embeddings
        self.user_embedding = nn.Embedding(n_users, d, sparse=sparse) if config.user_id else None
        self.item_embedding = nn.Embedding(n_items, d, sparse=sparse)
        self.brand_embedding = nn.Embedding(n_brands, d, sparse=sparse)
        for emb in (self.user_embedding, self.item_embedding, self.brand_embedding):
            if emb is not None:
                _init_embedding(emb)
        self.text_projection = nn.Linear(text_dim, config.text_projection_dim) if text_dim > 0 else None

        self.history_embedding: nn.EmbeddingBag | None = None
        if config.user_history:
            if user_history is None:
                raise ValueError("model.user_history needs the users' training items (user_history=(indptr, items))")
            self.history_embedding = nn.EmbeddingBag(n_items, d, mode="sum", sparse=sparse)
            _init_embedding(self.history_embedding)
            self._register_history(*user_history)
        self.item_bias: nn.Embedding | None = None
        self.text_to_item: nn.Linear | None = None
        if config.dot_product:
            self.item_bias = nn.Embedding(n_items, 1, sparse=sparse)
            nn.init.zeros_(self.item_bias.weight)
            if config.item_features and text_dim > 0:
                self.text_to_item = nn.Linear(text_dim, d, bias=False)

        self.mlp: nn.Sequential | None = None
        if config.mlp:
            width = self._item_side_width() + d + (d if config.product_interaction else 0)
            layers: list[nn.Module] = []
            for hidden in config.hidden_dims:
                layers += [nn.Linear(width, hidden), nn.ReLU(), FastDropout(config.dropout)]
                width = hidden
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)

    def _item_side_width(self) -> int:
        """Width of an item's part of the MLP input: its embedding, then brand, price pair and text."""
        if not self.config.item_features:
            return self.config.embedding_dim
        return 2 * self.config.embedding_dim + 2 + (self.config.text_projection_dim if self.text_dim > 0 else 0)

    def _register_item_features(
        self,
        item_brand: torch.Tensor,
        item_price: torch.Tensor,
        item_price_missing: torch.Tensor,
        item_text: torch.Tensor | None,
    ) -> None:
        """Validate shapes once here, so a wrong feature table fails at construction, not mid-epoch."""
        n = self.n_items
        brand = torch.as_tensor(item_brand, dtype=torch.int64)
        price = torch.as_tensor(item_price, dtype=torch.float32)
        missing = torch.as_tensor(item_price_missing, dtype=torch.float32)
        text = torch.zeros(n, 0) if item_text is None else torch.as_tensor(item_text, dtype=torch.float32)
        for name, tensor, shape in (
            ("item_brand", brand, (n,)),
            ("item_price", price, (n,)),
            ("item_price_missing", missing, (n,)),
            ("item_text", text, (n, self.text_dim)),
        ):
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
        if n and (brand.min() < 0 or brand.max() >= self.n_brands):
            raise ValueError(f"item_brand values must be brand ids in [0, {self.n_brands})")
        if not (torch.isfinite(price).all() and torch.isfinite(text).all()):
            raise ValueError("item_price and item_text must be finite (use 0 plus the missing flag for gaps)")
        self.register_buffer("item_brand", brand.contiguous())
        self.register_buffer("item_price", price.contiguous())
        self.register_buffer("item_price_missing", missing.contiguous())
        self.register_buffer("item_text", text.contiguous())

    def _register_history(self, indptr: np.ndarray, items: np.ndarray) -> None:
        """Each user's training items as CSR (not saved with the weights: rebuilt from the dataset)."""
        indptr = torch.as_tensor(np.asarray(indptr), dtype=torch.int64)
        items = torch.as_tensor(np.asarray(items), dtype=torch.int64)
        if (
            indptr.shape != (self.n_users + 1,)
            or int(indptr[-1]) != len(items)
            or bool((indptr[1:] < indptr[:-1]).any())
        ):
            raise ValueError(f"user_history indptr must be a CSR index over {self.n_users} users")
        if len(items) and (int(items.min()) < 0 or int(items.max()) >= self.n_items):
            raise ValueError(f"user_history items must be item ids in [0, {self.n_items})")
        owners = torch.repeat_interleave(torch.arange(self.n_users), indptr[1:] - indptr[:-1])
        keys, _ = torch.sort(owners * self.n_items + items)
        self.register_buffer("history_indptr", indptr, persistent=False)
        self.register_buffer("history_items", items, persistent=False)
        self.register_buffer("history_keys", keys, persistent=False)  # sorted user * n_items + item

    def user_vector(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """The user's embedding, plus the scaled sum of their history's embeddings with `user_history`;
        `leave_out` [B] is one item per user to drop from its history where the user has it."""
        if self.user_embedding is not None:
            vector = self.user_embedding(users)
        else:
            vector = torch.zeros(len(users), self.config.embedding_dim, device=users.device)
        if self.history_embedding is None:
            return vector
        starts = self.history_indptr.index_select(0, users)
        lengths = self.history_indptr.index_select(0, users + 1) - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        flat = torch.repeat_interleave(starts - offsets, lengths) + torch.arange(
            int(lengths.sum()), device=users.device
        )
        summed = self.history_embedding(self.history_items.index_select(0, flat), offsets)
        count = lengths.to(vector.dtype)
        if leave_out is not None:
            keys = users * self.n_items + leave_out
            found = torch.searchsorted(self.history_keys, keys).clamp(max=max(len(self.history_keys) - 1, 0))
            own = (
                (self.history_keys.index_select(0, found) == keys).to(vector.dtype)
                if len(self.history_keys)
                else torch.zeros_like(count)
            )
            own_rows = nn.functional.embedding(
                leave_out, self.history_embedding.weight, sparse=self.history_embedding.sparse
            )
            summed = summed - own[:, None] * own_rows
            count = count - own
        return vector + summed * count.clamp(min=1.0).rsqrt()[:, None]

    def item_vector(self, items: torch.Tensor) -> torch.Tensor:
        """The item's side of the dot product: its embedding, plus (with ``item_features``) its
        brand's embedding and a projection of its description vector, so items with little
        history borrow from their content."""
        vector = self.item_embedding(items)
        if self.config.item_features:
            vector = vector + self.brand_embedding(self.item_brand.index_select(0, items))
            if self.text_to_item is not None:
                vector = vector + self.text_to_item(self.item_text.index_select(0, items))
        return vector

    def _item_side(self, items: torch.Tensor, item: torch.Tensor) -> list[torch.Tensor]:
        if not self.config.item_features:
            return [item]
        # index_select, not tensor[items]: advanced indexing is ~6x slower on the CPU
        parts = [
            item,
            self.brand_embedding(self.item_brand.index_select(0, items)),
            torch.stack(
                [self.item_price.index_select(0, items), self.item_price_missing.index_select(0, items)], dim=-1
            ),
        ]
        if self.text_projection is not None:
            parts.append(self.text_projection(self.item_text.index_select(0, items)))
        return parts

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` (train with ``BCEWithLogitsLoss``); ids must be known, see :func:`to_known_ids`."""
        if not self.training:
            _check_ids("user", users, self.n_users)
            _check_ids("item", items, self.n_items)
        user = self.user_vector(users, leave_out=items if self.training else None)
        item = self.item_embedding(items)
        logit = torch.zeros(len(users), device=user.device, dtype=user.dtype)
        if self.mlp is not None:
            parts = [user, *self._item_side(items, item)]
            if self.config.product_interaction:
                parts.append(user * item)
            logit = logit + self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)
        if self.item_bias is not None:
            logit = logit + (user * self.item_vector(items)).sum(-1) + self.item_bias(items).squeeze(-1)
        return logit

    @torch.no_grad()
    def score_all_items(self, users: torch.Tensor, elements_per_chunk: int = 1 << 23) -> torch.Tensor:
        """Logits ``[B, n_items]`` of every item for each user, as ``forward`` in eval mode gives them
        (to float rounding), at a fraction of the cost: the first MLP layer is linear in its
        concatenated input, so its user part is computed once per user and its item part once
        per item; only the addition and the rest of the MLP run per (user, item) pair."""
        _check_ids("user", users, self.n_users)
        user = self.user_vector(users)
        weight = self.item_embedding.weight
        scores = torch.zeros(len(users), self.n_items, device=weight.device, dtype=weight.dtype)
        items = torch.arange(self.n_items, device=weight.device)
        if self.item_bias is not None:
            scores += user @ self.item_vector(items).T + self.item_bias.weight.T
        if self.mlp is None:
            return scores
        first, rest = self.mlp[0], self.mlp[1:]
        d = self.config.embedding_dim
        item_side = torch.cat(self._item_side(items, weight), dim=-1)
        item_width = self._item_side_width()
        item_part = item_side @ first.weight[:, d : d + item_width].T + first.bias  # [N, H]
        user_part = user @ first.weight[:, :d].T  # [B, H]
        product_weight = first.weight[:, d + item_width :] if self.config.product_interaction else None
        chunk = max(1, elements_per_chunk // max(1, self.n_items * first.out_features))
        was_training = self.training
        self.eval()  # dropout off
        for start in range(0, len(users), chunk):
            stop = start + chunk
            hidden = user_part[start:stop, None, :] + item_part[None]
            if product_weight is not None:
                hidden = hidden + (user[start:stop, None, :] * weight[None]) @ product_weight.T
            scores[start:stop] += rest(hidden).squeeze(-1)
        self.train(was_training)
        return scores

    def predict_proba(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B]``; call ``model.eval()`` first so dropout is off."""
        return torch.sigmoid(self(users, items))


class FastDropout(nn.Module):
    """Inverted dropout with the same distribution as ``nn.Dropout``, at about half its CPU cost.

    On the CPU, ``torch.nn.functional.dropout`` draws one Bernoulli per element through a slow
    path (about 1.2 ms for a 512 x 128 activation on one core, more than the layer's matmul;
    forward plus backward here: 0.68 ms against 1.21 ms).
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


def _init_embedding(emb: nn.Embedding | nn.EmbeddingBag) -> None:
    """Small random rows; row 0 ("unknown") starts at zero so unseen ids get a neutral input."""
    with torch.no_grad():
        nn.init.normal_(emb.weight, std=_EMBEDDING_INIT_STD)
        emb.weight[0].zero_()


def _check_ids(name: str, ids: torch.Tensor, vocab_size: int) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{name} ids must be in [0, {vocab_size}); map unseen ids to 0 with to_known_ids(ids, {vocab_size})"
        )


class RowSparseAdam(torch.optim.Optimizer):
    """``torch.optim.SparseAdam``'s update ("lazy" Adam: only the rows in the gradient move), with
    dense row operations instead of sparse tensors.

    The numbers are SparseAdam's (the tests compare them) and so is the state layout (``step``,
    ``exp_avg``, ``exp_avg_sq``); a step costs about two thirds of SparseAdam's on the CPU (330 vs
    500 us for 512 rows of a 55,000 x 64 table, one thread), where building sparse tensors and
    ``sparse_mask`` dominate for batches of a few hundred rows.
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


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass over all parameters instead of foreach's several,
    which dominated a CPU training step of this embedding-heavy model (benchmarks/README.md).

    Same update rule and state as the default implementation.
    """
    return torch.optim.Adam(params, lr=lr, fused=True)


def build_model(catalog: "Catalog", config: "Config") -> AlsoViewMLP:
    """The configured model over a prepared dataset's vocabulary and item features."""
    return AlsoViewMLP(
        n_users=catalog.n_users,
        n_items=catalog.n_items,
        n_brands=catalog.n_brands,
        text_dim=catalog.text_dim,
        # copies: the catalog's arrays are read-only views into Ray's object store
        item_brand=torch.tensor(catalog.item_brand),
        item_price=torch.tensor(catalog.item_price),
        item_price_missing=torch.tensor(catalog.item_price_missing),
        item_text=torch.tensor(catalog.item_text),
        config=config.model,
        user_history=training_history(catalog) if config.model.user_history else None,
    )


def training_history(catalog: "Catalog") -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct training items, as CSR (indptr over users, item ids)."""
    keys = np.unique(catalog.train.users * catalog.n_items + catalog.train.items)
    users, items = keys // catalog.n_items, keys % catalog.n_items
    return np.searchsorted(users, np.arange(catalog.n_users + 1)).astype(np.int64), items.astype(np.int64)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as the item feature tables are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
